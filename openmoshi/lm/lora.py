"""LoRA adapters of the language model, saved and loaded in the layout of Kyutai's loader and moshi-finetune.

An adapter file is a safetensors file (moshi-finetune calls it `lora.safetensors`) holding, for every adapted
linear, `<Kyutai module>.lora_A.weight` [r, in] and `<Kyutai module>.lora_B.weight` [out, r], where the module
is named as in Kyutai's in-memory LMModel (one module per depth step):
  transformer.layers.{i}.self_attn.in_projs.0 / out_projs.0,  transformer.layers.{i}.gating.linear_{in,out},
  text_linear,  depformer_in.{k},  linears.{k},  depformer.layers.{i}.self_attn.in_projs.{k} / out_projs.{k},
  depformer.layers.{i}.gating.{k}.linear_{in,out}.
On loading, the attention's unsplit names (`self_attn.in_proj.lora_A.weight`, the depth steps stacked along
dim 0), which Kyutai's loader also takes, are accepted too. Names are mapped through the one Kyutai-name adapter
(`lm.checkpoint.map_kyutai_name`) and checked by the strict-loading engine: unexpected, missing, mis-shaped,
duplicated and non-finite tensors are all reported at once, naming them.

The rank is the file's (A's first dim); the scaling is not in Kyutai's file: it comes from a `config.json`
with `"lora": true, "lora_rank": r, "lora_scaling": s` (Kyutai's loader reads these from the model's config.json,
moshi-finetune writes one next to its `lora.safetensors`), from our file's own metadata (`lora_rank`,
`lora_scaling`, `lora_layers`: ignored by Kyutai's loader), else Kyutai's default 2.0. Sources that disagree are
an error. Kyutai's loader needs an adapter for every linear (its default and ours); a file trained on a subset
of layers (`targets`) loads in ours, which reads the subset from the metadata.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, Placement, check_finite, plan_checkpoint
from ..io_safety import write_bytes, write_text
from ..nn.lora import ADAPTER_NAMES, apply_lora, linear_layers, lora_layers, merge_lora
from ..safetensors_io import lazy_tensors, open_safetensors
from .checkpoint import map_kyutai_name
from .config import LMConfig
from .model import LMModel

LORA_FILE_NAME = "lora.safetensors"  # moshi-finetune's name, and config.json's `lora_name` default of ours
DEFAULT_RANK, DEFAULT_SCALING = 128, 2.0  # Kyutai's loader defaults (config.json `lora: true` without them)
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_ADAPTER_KEY = re.compile(r"(?P<module>.+)\.(?P<ab>lora_A|lora_B)\.weight")


class LoraError(ValueError):
    """An adapter file that cannot be used (with the model, or with its stated rank / scaling); names the problem."""


@dataclass(frozen=True)
class LoraInfo:
    """What was loaded: the file, its rank and scaling, and the adapted layers (our module names)."""

    path: Path
    rank: int
    scaling: float
    layers: tuple[str, ...]
    merged: bool = False


def kyutai_modules(cfg: LMConfig) -> dict[str, list[str]]:
    """{our linear's module name: Kyutai's module name for each of its steps (one for a shared linear)}.

    Built from Kyutai's in-memory weight names mapped through `map_kyutai_name`, so the one adapter of names
    stays the only place that knows how the two models correspond.
    """
    return _kyutai_modules(cfg.num_layers, cfg.depformer_num_layers, cfg.dep_q)


def _kyutai_modules(num_layers: int, depformer_num_layers: int, dep_q: int) -> dict[str, list[str]]:
    names = ["text_linear"]
    names += [f"{kind}.{k}" for kind in ("depformer_in", "linears") for k in range(dep_q)]
    for i in range(num_layers):
        p = f"transformer.layers.{i}"
        names += [f"{p}.self_attn.in_projs.0", f"{p}.self_attn.out_projs.0", f"{p}.gating.linear_in",
                  f"{p}.gating.linear_out"]
    for i in range(depformer_num_layers):
        p = f"depformer.layers.{i}"
        for k in range(dep_q):
            names += [f"{p}.self_attn.in_projs.{k}", f"{p}.self_attn.out_projs.{k}", f"{p}.gating.{k}.linear_in",
                      f"{p}.gating.{k}.linear_out"]
    out: dict[str, dict[int, str]] = {}
    for name in names:
        mapped = map_kyutai_name(name + ".weight")
        assert mapped is not None, name
        ours, k, _ = mapped
        out.setdefault(ours.removesuffix(".weight"), {})[0 if k is None else k] = name
    return {layer: [steps[k] for k in sorted(steps)] for layer, steps in out.items()}


def _placement(name: str) -> Placement | None:
    """Where one of Kyutai's adapter tensor names goes among our adapters (None: not an adapter name we know)."""
    m = _ADAPTER_KEY.fullmatch(name)
    if m is None:
        return None
    module = m["module"]
    # Kyutai's attention load hook also takes the unsplit `self_attn.in_proj` (its weight: `in_proj_weight`).
    weight = module[: -len(".in_proj")] + ".in_proj_weight" if module.endswith(".self_attn.in_proj") else \
        module + ".weight"
    mapped = map_kyutai_name(weight)
    if mapped is None or mapped[2] == "alpha":
        return None
    ours, k, kind = mapped
    return Placement(f"{ours.removesuffix('.weight')}.{m['ab']}", k, "stacked" if kind == "stacked" else "same")


def _sizes_of(adapters: Mapping[str, torch.Tensor]) -> tuple[int, int, int]:
    """(temporal layers, depth layers, depth steps) as far as the adapters' own names and shapes tell."""
    def count(pattern: str) -> int:
        found = [int(m[1]) for k in adapters if (m := re.match(pattern, k))]
        return max(found) + 1 if found else 0

    steps = {v.shape[0] for k, v in adapters.items() if k.startswith("depformer.") and v.dim() == 3}
    return (count(r"transformer\.layers\.(\d+)\."), count(r"depformer\.transformer\.layers\.(\d+)\."),
            max(steps) if steps else 1)


def to_kyutai_names(adapters: Mapping[str, torch.Tensor], cfg: LMConfig | None = None) -> dict[str, torch.Tensor]:
    """Our adapters {"<layer>.lora_A"/"lora_B": tensor} -> Kyutai's names (per-step layers split per step).
    `cfg` None: the layer counts are read from the adapters' names (only those layers are named)."""
    modules = kyutai_modules(cfg) if cfg is not None else _kyutai_modules(*_sizes_of(adapters))
    out = {}
    for key, value in adapters.items():
        layer, _, ab = key.rpartition(".")
        if ab not in ADAPTER_NAMES or layer not in modules:
            raise KeyError(f"{key} is not an adapter of a linear layer of this model")
        kyutai = modules[layer]
        if len(kyutai) == 1 and value.dim() == 2:
            out[f"{kyutai[0]}.{ab}.weight"] = value
        else:
            for k, name in enumerate(kyutai):
                out[f"{name}.{ab}.weight"] = value[k]
    return out


def _gather(value: torch.Tensor) -> torch.Tensor:
    full = value.full_tensor() if hasattr(value, "full_tensor") else value  # FSDP2's DTensor: every rank calls
    return full.detach().cpu().contiguous()


def lora_config(kyutai_config: Mapping[str, Any], rank: int, scaling: float,
                lora_name: str = LORA_FILE_NAME) -> dict[str, Any]:
    """A model config.json (Kyutai's layout) that says the LM runs with these adapters, as Kyutai's loader
    reads it: `lora: true`, `lora_rank`, `lora_scaling`, and the adapter file's name `lora_name`."""
    return {**kyutai_config, "lora": True, "lora_rank": rank, "lora_scaling": scaling, "lora_name": lora_name}


def save_lora(source: torch.nn.Module | Mapping[str, torch.Tensor], path: str | Path, *, rank: int | None = None,
              scaling: float | None = None, kyutai_config: Mapping[str, Any] | None = None,
              dtype: torch.dtype | None = None, write: bool = True) -> Path:
    """Save adapters alone, in Kyutai's names, atomically; returns the adapter file's path.

    `source`: a model with adapters (`apply_lora` / `load_lora`), or a state dict in our names that holds them
    (other entries are ignored: e.g. the full state gathered from FSDP2), for which `scaling` is required.
    `rank` / `scaling`, when given with a model, must be the model's. `path`: a `.safetensors` file, or a folder
    that gets `lora.safetensors` and a `config.json` (`lora_config`: `kyutai_config`, the base model's
    config.json contents, plus the LoRA keys), as moshi-finetune's checkpoint folders have; next to a file a
    config.json is written only with `kyutai_config`. The file's metadata records rank, scaling and the layers.
    `dtype`: cast the adapters (default: as trained). Under FSDP2, with a model, call it on every rank (the
    adapters are gathered) with `write=True` on one rank only.
    """
    from safetensors.torch import save

    path = Path(path)
    folder = path.suffix != ".safetensors"
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"adapters go to a .safetensors file or a folder; {path} is neither")
    file = path / LORA_FILE_NAME if folder else path
    if isinstance(source, torch.nn.Module):
        layers = lora_layers(source)
        if not layers:
            raise ValueError("the model has no LoRA adapters to save (apply_lora first)")
        settings = {(m.rank, m.scaling) for m in layers.values()}
        if len(settings) != 1:
            raise ValueError(f"the model's adapters mix ranks or scalings {sorted(settings)}: a file holds one")
        ((model_rank, model_scaling),) = settings
        for what, given, have in (("rank", rank, model_rank), ("scaling", scaling, model_scaling)):
            if given is not None and given != have:
                raise ValueError(f"LoRA {what} {given} asked for, but the model's adapters have {have}")
        rank, scaling = model_rank, model_scaling
        state = {k: _gather(v) for k, v in _adapter_state(source).items()}
    else:
        state = {k: _gather(v) for k, v in source.items() if k.rsplit(".", 1)[-1] in ADAPTER_NAMES}
        if not state:
            raise ValueError("the state dict holds no LoRA adapters (<layer>.lora_A / <layer>.lora_B)")
        if scaling is None:
            raise ValueError("saving adapters from a state dict needs their scaling")
        ranks = {v.shape[-2] for k, v in state.items() if k.endswith(".lora_A")}
        if len(ranks) != 1 or (rank is not None and ranks != {rank}):
            raise ValueError(f"the adapters' ranks are {sorted(ranks)}" + (f", not {rank}" if rank else ""))
        (rank,) = ranks
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    tensors = to_kyutai_names(state, getattr(source, "cfg", None))
    layer_names = sorted({k.rsplit(".", 1)[0] for k in state})
    metadata = {"format": "pt", "lora_rank": str(rank), "lora_scaling": repr(float(scaling)),
                "lora_layers": json.dumps(layer_names)}
    if write:
        write_bytes(file, save(dict(sorted(tensors.items())), metadata=metadata))
        if folder or kyutai_config is not None:
            config = lora_config(kyutai_config or {}, rank, float(scaling), file.name)
            write_text(file.with_name("config.json"), json.dumps(config, indent=2) + "\n")
    return file


def _adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Adapters under our names from the live modules (after `merge_lora` there are none)."""
    return {k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] in ADAPTER_NAMES}


def _meta_model(cfg: LMConfig) -> LMModel:
    with torch.device("meta"):
        return LMModel(cfg)


def _metadata(path: Path) -> dict[str, str]:
    """A safetensors file's `__metadata__` (its header was validated by `open_safetensors`)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(size)).get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def _number(value: Any, kind: type, what: str, source: str) -> Any:
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise LoraError(f"{source}: {what} {value!r} is not a number") from None
    if isinstance(value, bool) or (kind is int and out < 1) or (kind is float and not math.isfinite(out)):
        raise LoraError(f"{source}: {what} {value!r} is out of range")
    return out


def _sidecar(path: Path) -> dict[str, Any]:
    """rank / scaling of a config.json next to the adapter file (moshi-finetune's checkpoint folder), if any
    and if it says `"lora": true`."""
    config = path.with_name("config.json")
    if not config.is_file():
        return {}
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LoraError(f"cannot read {config} (next to the adapters {path.name}): {err}") from None
    if not isinstance(raw, dict) or raw.get("lora") is not True:  # as Kyutai's loader: the keys count with lora
        return {}
    return {k: raw[k] for k in ("lora_rank", "lora_scaling") if k in raw}


def _settle(what: str, claims: list[tuple[str, Any]], path: Path) -> Any:
    values = {v for _, v in claims}
    if len(values) > 1:
        said = "; ".join(f"{src} says {v}" for src, v in claims)
        raise LoraError(f"conflicting LoRA {what} for {path}: {said}")
    return claims[0][1] if claims else None


def read_plan(path: str | Path, cfg: LMConfig, *, rank: int | None = None, scaling: float | None = None
              ) -> tuple[int, float, tuple[str, ...]]:
    """(rank, scaling, adapted layers) of an adapter file for a model of `cfg`, every tensor's name and shape
    checked (no data read). `rank` / `scaling`: what the model's config.json says (None: not stated)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA adapter file not found: {path}")
    with open_safetensors(path) as (_, header, _):
        shapes = {k: tuple(i["shape"]) for k, i in header.items()}
        not_float = sorted(k for k, i in header.items() if i["dtype"] not in _FLOAT_DTYPES)
    meta = _metadata(path)
    if not_float:
        raise LoraError(f"{path}: adapters must be floating point; not so: {not_float[:12]}")
    # The rank: A's first dim (per step; an unsplit depth-transformer A stacks the steps along it).
    ranks: dict[int, list[str]] = {}
    for name, shape in shapes.items():
        p = _placement(name)
        if p is not None and p.target.endswith(".lora_A") and len(shape) == 2:
            ranks.setdefault(shape[0] // (cfg.dep_q if p.kind == "stacked" else 1), []).append(name)
    if not ranks:
        raise LoraError(f"{path} holds no LoRA adapter of this model (no <module>.lora_A.weight of Kyutai's LM "
                        f"names among its {len(shapes)} tensors{': ' + ', '.join(list(shapes)[:5]) if shapes else ''})")
    if len(ranks) > 1:
        listing = "; ".join(f"rank {r}: {names[0]}{' ...' if len(names) > 1 else ''}" for r, names in ranks.items())
        raise LoraError(f"{path}: adapters of different ranks in one file ({listing})")
    (file_rank,) = ranks
    src = str(path)
    stated = [(f"{path.name}'s metadata", _number(meta["lora_rank"], int, "lora_rank", src))] \
        if "lora_rank" in meta else []
    side = _sidecar(path)
    if "lora_rank" in side:
        stated.append((str(path.with_name("config.json")), _number(side["lora_rank"], int, "lora_rank", src)))
    if rank is not None:
        stated.append(("the model's config.json", rank))
    for where, r in stated:
        if r != file_rank:
            raise LoraError(f"wrong LoRA rank: {where} says {r}, but the adapters in {path} have rank {file_rank}")
    claims = [(f"{path.name}'s metadata", _number(meta["lora_scaling"], float, "lora_scaling", src))] \
        if "lora_scaling" in meta else []
    if "lora_scaling" in side:
        claims.append((str(path.with_name("config.json")),
                       _number(side["lora_scaling"], float, "lora_scaling", src)))
    if scaling is not None:
        claims.append(("the model's config.json", float(scaling)))
    final_scaling = _settle("scaling", claims, path)
    final_scaling = DEFAULT_SCALING if final_scaling is None else final_scaling
    every = tuple(linear_layers(_meta_model(cfg)))
    layers = _layers_from_metadata(meta, every, path)
    dry = _meta_model(cfg)
    apply_lora(dry, file_rank, final_scaling, targets=list(layers) if layers != every else None)
    try:
        plan_checkpoint(_adapter_state(dry), shapes, _placement, f"LoRA adapters {path}")
    except CheckpointError as err:
        raise LoraError(str(err)) from None
    return file_rank, final_scaling, layers


def _layers_from_metadata(meta: Mapping[str, str], every: tuple[str, ...], path: Path) -> tuple[str, ...]:
    value = meta.get("lora_layers", "all")
    if value == "all":
        return every
    try:
        layers = json.loads(value)
    except json.JSONDecodeError:
        layers = None
    if not isinstance(layers, list) or not layers or not all(isinstance(n, str) for n in layers):
        raise LoraError(f"{path}: metadata lora_layers must be 'all' or a JSON list of layer names, got {value!r}")
    unknown = sorted(set(layers) - set(every))
    if unknown:
        raise LoraError(f"{path}: metadata lora_layers names layers this model does not have: {unknown[:12]}")
    return tuple(n for n in every if n in set(layers))


def load_lora(model: LMModel, path: str | Path, *, rank: int | None = None, scaling: float | None = None,
              merge: bool = False) -> LoraInfo:
    """Add the adapters of `path` to `model` (apply_lora with the file's rank and layers, then copy), or, with
    `merge`, fold them into its weights (the fast path for inference; the model is then a plain LMModel).

    `rank` / `scaling`: what the model's config.json says (checked against the file; None: not stated). A model
    that already has adapters of the same rank and layers gets its adapters replaced (resuming a LoRA run).
    Raises FileNotFoundError, LoraError (names, shapes, rank, scaling, non-finite values).
    """
    path = Path(path)
    file_rank, final_scaling, layers = read_plan(path, model.cfg, rank=rank, scaling=scaling)
    present = lora_layers(model)
    if present:
        have = {(m.rank, m.scaling) for m in present.values()}
        if set(present) != set(layers) or have != {(file_rank, final_scaling)}:
            raise LoraError(f"the model already has adapters ({len(present)} layers, rank/scaling {sorted(have)}) "
                            f"that differ from {path} ({len(layers)} layers, rank {file_rank}, "
                            f"scaling {final_scaling})")
    else:
        every = tuple(linear_layers(model))
        apply_lora(model, file_rank, final_scaling, targets=list(layers) if layers != every else None)
    targets = {k: v for k, v in model.state_dict(keep_vars=True).items() if k.rsplit(".", 1)[-1] in ADAPTER_NAMES}
    label = f"LoRA adapters {path}"
    with open_safetensors(path) as (f, header, data_start):
        plan = plan_checkpoint(targets, {k: tuple(i["shape"]) for k, i in header.items()}, _placement, label)
        with torch.no_grad():
            for name, get in lazy_tensors(f, header, data_start, path):
                p = plan[name]
                target = targets[p.target]
                dest = target if p.index is None else target[p.index]
                dest.copy_(get().reshape(dest.shape))
                try:
                    check_finite(dest, name, label)
                except CheckpointError as err:
                    raise LoraError(str(err)) from None
    if merge:
        merge_lora(model)
    return LoraInfo(path, file_rank, final_scaling, layers, merge)

