"""Training configuration: typed dataclasses, named presets, strict YAML and `--set key=value` overrides.

One mechanism for every trainer (the LM's in `lm_config.py`, the codec's in its own module):
- a config is a tree of dataclasses (`OptimConfig`, `ScheduleConfig`, `LoopConfig` here are shared sections);
- `resolve_config(cls, source, presets, sets)` builds one from a preset name or a YAML file, then applies
  `--set section.key=value` overrides (values parsed as YAML scalars: `3e-4`, `true`, `[0, 1]`, `null`);
- every key is checked: an unknown key is refused by its dotted name (with the known ones), a value of the wrong
  type is refused naming the key, the expected type and the value. Nothing is coerced silently except an integer
  given for a float. A section whose keys were regrouped lists its old keys in a `MOVED_KEYS` class attribute
  (old key -> new dotted key within the section): an old key is refused with the name of its new place;
- `dump_yaml(config)` writes the resolved config (saved as RUN/config.yaml), which `resolve_config` reads back to
  the same object.

A YAML file is an override of a preset: it may name `preset: NAME` at its top level (default: the first preset
of the registry), and gives only the keys it changes.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and the problem."""


# ---- shared sections ---------------------------------------------------------------------------------------
@dataclass
class OptimConfig:
    """AdamW. `lr` is the peak learning rate (the schedule scales it); `grad_clip` 0 = no clipping."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    eps: float = 1e-8
    grad_clip: float = 1.0


@dataclass
class ScheduleConfig:
    """Learning-rate multiplier over the steps: linear warm-up then `cosine` down to `min_lr_ratio`,
    `onecycle` (cosine up from lr/25, cosine down to ~0), or `constant` after the warm-up.
    `warmup_steps` None = `warmup_share` of the steps."""

    kind: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_steps: int | None = None
    warmup_share: float = 0.05
    min_lr_ratio: float = 0.1


@dataclass
class LoopConfig:
    """The training loop. `batch_size` is the GLOBAL batch (all ranks, all accumulation micro-steps): each rank
    runs batch_size / (world size * grad_accum) sequences per micro-step."""

    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    seed: int = 1234
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast, fp32 master weights
    activation_checkpointing: bool = False
    compile: bool = False
    device: str | None = None  # None: cuda (this rank's) when available, else cpu
    log_every: int = 10
    val_every: int = 100  # 0 = no validation
    val_batches: int = 4  # global batches per validation
    checkpoint_every: int = 500  # 0 = only at the end
    keep_checkpoints: int = 2


# ---- checking and building -----------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (tuple, list):
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping of " + tp.__name__ + " keys"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    """`value` checked against the type `tp` (and converted: lists to tuples, mappings to dataclasses)."""
    origin = get_origin(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _convert(arg, value, key)
            except ConfigError:
                continue
        raise bad
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if origin is Literal:
        if value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}:
            return value
        raise bad
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise bad
            return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise bad
        return from_dict(tp, value, key)
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _refuse_moved_keys(cls: type, values: Mapping[str, Any], prefix: str) -> None:
    """ConfigError naming the new place of every key of `values` that `cls.MOVED_KEYS` lists as moved: a key
    that is no longer a field, or one that became a section and is given a plain value."""
    moved: Mapping[str, str] = getattr(cls, "MOVED_KEYS", {})
    if not moved:
        return
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    found = []
    for key, value in values.items():
        if key not in moved:
            continue
        if key not in names or (dataclasses.is_dataclass(hints[key]) and not isinstance(value, Mapping)
                                and not dataclasses.is_dataclass(value)):
            found.append(f"{_join(prefix, key)} is now {_join(prefix, moved[key])}")
    if found:
        raise ConfigError(f"moved config key{'s' if len(found) > 1 else ''}: {'; '.join(found)}")


def from_dict(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, strictly (unknown keys and wrong types are ConfigErrors)."""
    _refuse_moved_keys(cls, values, prefix)
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(f"unknown config key{'s' if len(unknown) > 1 else ''}{where}: "
                          f"{', '.join(_join(prefix, k) for k in unknown)} (known: {', '.join(names)})")
    kwargs = {k: _convert(hints[k], v, _join(prefix, k)) for k, v in values.items()}
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from None
    return obj


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def to_dict(obj: Any) -> Any:
    """A config as plain YAML-able data (tuples as lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def merge(obj: T, overrides: Mapping[str, Any], prefix: str = "") -> T:
    """A copy of dataclass `obj` with a nested mapping of overrides applied (strictly checked)."""
    _refuse_moved_keys(type(obj), overrides, prefix)
    hints = _hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}  # type: ignore[arg-type]
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            where = f" in {prefix}" if prefix else ""
            raise ConfigError(f"unknown config key{where}: {_join(prefix, key)} (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = merge(current, value, _join(prefix, key))
        else:
            changes[key] = _convert(hints[key], value, _join(prefix, key))
    return from_dict(type(obj), {**{f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, **changes},
                     prefix)


def _yaml_loader():
    """A safe YAML loader that reads `1e-4` as a number (YAML 1.1 wants `1.0e-4`), as users write it."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )
    return Loader


def _yaml_load(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506  (a SafeLoader subclass)


def parse_set(item: str) -> dict[str, Any]:
    """`a.b.c=value` -> {"a": {"b": {"c": value}}}; the value is a YAML scalar or flow list/mapping."""
    import yaml

    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value (e.g. optim.lr=1e-4)")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = _yaml_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot parse the value {text!r}: {str(err).splitlines()[0]}") from None
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file holding a mapping; ConfigError naming the file otherwise."""
    import yaml

    path = Path(path)
    try:
        data = _yaml_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def resolve_config(
    cls: type[T],
    source: str,
    presets: Mapping[str, Callable[[], T]],
    sets: Sequence[str] = (),
) -> T:
    """The config named by `source` (a preset name, or a YAML file over a preset) with `--set` overrides."""
    if source in presets:
        config = presets[source]()
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            if path.suffix.lower() in (".yaml", ".yml") or "/" in source:
                raise ConfigError(f"config file not found: {source}")
            raise ConfigError(f"unknown preset {source!r} (presets: {', '.join(presets)}; or give a YAML file)")
        data = load_yaml(path)
        base = data.pop("preset", next(iter(presets)))
        if base not in presets:
            raise ConfigError(f"{path}: preset: unknown preset {base!r} (presets: {', '.join(presets)})")
        config = merge(presets[base](), data)
    for item in sets:
        config = merge(config, parse_set(item))
    if not isinstance(config, cls):
        raise ConfigError(f"preset {source!r} is not a {cls.__name__}")
    return config


def dump_yaml(config: Any) -> str:
    import yaml

    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None)


__all__ = ["ConfigError", "OptimConfig", "ScheduleConfig", "LoopConfig", "from_dict", "to_dict", "merge",
           "parse_set", "load_yaml", "resolve_config", "dump_yaml", "field"]
