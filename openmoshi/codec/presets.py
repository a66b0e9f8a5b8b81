"""The Mimi presets (one registry) and the config.json `"mimi"` overrides, checked field by field.

`MIMI_PRESETS` maps each preset name to what it is; its names are `MimiConfig` constructors (`MimiConfig.mimi()`,
`MimiConfig.tiny()`). The commands' `--preset` choices, `load_mimi` and the config.json parser all read it, and
importing this module does not import torch (the commands' `--help` stays fast): `MimiConfig` is imported when a
config is built.

Overrides (`{"preset": "tiny", "seanet": {"ratios": [2, 2, 2, 2]}, ...}`) replace fields of the preset; every
key and value type is checked against `MimiConfig`'s fields, so a typo or a wrong type is a `ValueError` naming
the key, never a traceback from deep inside the model.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .mimi import MimiConfig

MIMI_PRESETS: dict[str, str] = {
    "mimi": "Kyutai's released Mimi (79,308,609 parameters, 1920-sample frames at 24 kHz)",
    "tiny": "a few thousand parameters with Mimi's structure, for tests (48-sample frames)",
}
DEFAULT_MIMI_PRESET = "mimi"


def mimi_preset(name: str) -> MimiConfig:
    """The MimiConfig of a preset name; ValueError listing the known names."""
    from .mimi import MimiConfig

    if not isinstance(name, str) or name not in MIMI_PRESETS:
        raise ValueError(f"unknown Mimi preset {name!r} (known: {', '.join(MIMI_PRESETS)})")
    return getattr(MimiConfig, name)()


def _check(hint: Any, value: Any, where: str) -> Any:
    """`value` converted to the field type `hint` (lists -> tuples), or ValueError naming `where`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        problems = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(arg, value, where)
            except ValueError as err:
                problems.append(str(err))
        raise ValueError(problems[0] if problems else f"{where}: got {value!r}")
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return tuple(_check(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    raise ValueError(f"{where} cannot be set from config.json")


def _replace(base: Any, values: Any, where: str) -> Any:
    """A copy of the dataclass `base` with `values` (a dict) checked and applied, nested dataclasses included."""
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be an object of {type(base).__name__} fields, got {values!r}")
    hints = typing.get_type_hints(type(base))
    fields = {f.name for f in dataclasses.fields(base)}
    changes = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"unknown key {where}.{key} (known: {', '.join(sorted(fields))})")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _replace(current, value, f"{where}.{key}")
        else:
            changes[key] = _check(hints[key], value, f"{where}.{key}")
    try:
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError, ZeroDivisionError) as err:  # the configs' own checks (__post_init__)
        raise ValueError(f"invalid {where}: {err}") from None


def mimi_config_from_overrides(overrides: dict[str, Any] | None) -> MimiConfig:
    """The MimiConfig of config.json's `"mimi"` object: `preset` (default "mimi") then field overrides."""
    values = dict(overrides or {})
    preset = values.pop("preset", DEFAULT_MIMI_PRESET)
    return _replace(mimi_preset(preset), values, "mimi")
