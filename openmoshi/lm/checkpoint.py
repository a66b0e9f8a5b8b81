"""Loading language-model weights: Kyutai's naming (published files and in-memory) and ours, strictly; and the
inverse, `kyutai_state_dict` (ours -> Kyutai's published names, for exports).

Kyutai's names map onto ours as follows (i = layer, k = step / codebook):
  emb.{k}.weight                         -> audio_emb.weight[k]
  text_emb / text_linear .weight         -> same names
  out_norm.alpha (1,1,D)                 -> out_norm.weight [D]           (every `alpha` likewise)
  transformer.layers.{i}.self_attn.in_projs.0.weight | .in_proj_weight   -> transformer.layers.{i}.attn.in_proj.weight
  transformer.layers.{i}.self_attn.out_projs.0.weight | .out_proj.weight -> ...attn.out_proj.weight
  transformer.layers.{i}.gating.linear_{in,out}.weight                   -> ...ff.linear_{in,out}.weight
  depformer_in.{k}.weight                -> depformer.in_proj.weight[k]
  depformer_emb.{k}.weight               -> depformer.audio_emb.weight[k]
  depformer_text_emb.weight              -> depformer.text_emb.weight
  linears.{k}.weight                     -> depformer.heads.weight[k]
  depformer.layers.{i}.self_attn.in_projs.{k}.weight -> depformer.transformer.layers.{i}.attn.in_proj.weight[k]
  depformer.layers.{i}.self_attn.in_proj_weight (S*3Dd, Dd), published: all steps stacked step-major
  depformer.layers.{i}.gating.{k}.linear_{in,out}.weight -> ...ff.linear_{in,out}.weight[k]
The strict-loading engine (`openmoshi.checkpoint`, shared with Mimi) does the checking and copying: every target
element must be written exactly once; anything unknown, missing, mis-shaped or non-finite is a CheckpointError
naming the tensors. Weights are read from the file tensor by tensor (no mmap) and copied into a model materialised once
(built on the meta device), so a 15 GB checkpoint needs about 15 GB, not twice that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, Placement, load_checkpoint, plan_checkpoint
from ..safetensors_io import open_safetensors
from .config import LMConfig
from .model import LMModel

# (pattern on Kyutai's name, our name template, kind). kind: "same" (shape equal), "index" (one slice [k] of a
# stacked target, k = the `k` group), "alpha" ((1,1,D) -> [D]), "stacked" ((S*out, in) -> [S, out, in]).
_RULES: list[tuple[str, str, str]] = [
    (r"emb\.(?P<k>\d+)\.weight", "audio_emb.weight", "index"),
    (r"text_emb\.weight", "text_emb.weight", "same"),
    (r"text_linear\.weight", "text_linear.weight", "same"),
    (r"out_norm\.alpha", "out_norm.weight", "alpha"),
    (r"transformer\.layers\.(?P<i>\d+)\.norm(?P<n>[12])\.alpha", "transformer.layers.{i}.norm{n}.weight",
     "alpha"),
    (r"transformer\.layers\.(?P<i>\d+)\.self_attn\.(?:in_projs\.0\.weight|in_proj_weight)",
     "transformer.layers.{i}.attn.in_proj.weight", "same"),
    (r"transformer\.layers\.(?P<i>\d+)\.self_attn\.(?:out_projs\.0|out_proj)\.weight",
     "transformer.layers.{i}.attn.out_proj.weight", "same"),
    (r"transformer\.layers\.(?P<i>\d+)\.gating\.linear_(?P<w>in|out)\.weight",
     "transformer.layers.{i}.ff.linear_{w}.weight", "same"),
    (r"depformer_in\.(?P<k>\d+)\.weight", "depformer.in_proj.weight", "index"),
    (r"depformer_emb\.(?P<k>\d+)\.weight", "depformer.audio_emb.weight", "index"),
    (r"depformer_text_emb\.weight", "depformer.text_emb.weight", "same"),
    (r"linears\.(?P<k>\d+)\.weight", "depformer.heads.weight", "index"),
    (r"depformer\.layers\.(?P<i>\d+)\.norm(?P<n>[12])\.alpha", "depformer.transformer.layers.{i}.norm{n}.weight",
     "alpha"),
    (r"depformer\.layers\.(?P<i>\d+)\.self_attn\.in_projs\.(?P<k>\d+)\.weight",
     "depformer.transformer.layers.{i}.attn.in_proj.weight", "index"),
    (r"depformer\.layers\.(?P<i>\d+)\.self_attn\.out_projs\.(?P<k>\d+)\.weight",
     "depformer.transformer.layers.{i}.attn.out_proj.weight", "index"),
    (r"depformer\.layers\.(?P<i>\d+)\.self_attn\.in_proj_weight",
     "depformer.transformer.layers.{i}.attn.in_proj.weight", "stacked"),
    (r"depformer\.layers\.(?P<i>\d+)\.self_attn\.out_proj\.weight",
     "depformer.transformer.layers.{i}.attn.out_proj.weight", "stacked"),
    (r"depformer\.layers\.(?P<i>\d+)\.gating\.(?P<k>\d+)\.linear_(?P<w>in|out)\.weight",
     "depformer.transformer.layers.{i}.ff.linear_{w}.weight", "index"),
]
_COMPILED = [(re.compile(p), t, kind) for p, t, kind in _RULES]


def map_kyutai_name(name: str) -> tuple[str, int | None, str] | None:
    """Kyutai name -> (our name, slice index or None, kind), or None if not a known Kyutai LM name."""
    for pattern, template, kind in _COMPILED:
        m = pattern.fullmatch(name)
        if m:
            groups = m.groupdict()
            k = int(groups.pop("k")) if "k" in groups else None
            return template.format(**groups), k, kind
    return None


# The one checkpoint error type of the project (kept under this name for existing callers).
CheckpointMismatch = CheckpointError


def kyutai_placement(name: str) -> Placement | None:
    """The engine's placement of one of Kyutai's LM tensor names (None: not a Kyutai LM name)."""
    mapped = map_kyutai_name(name)
    if mapped is None:
        return None
    target, index, kind = mapped
    return Placement(target, index, "same" if kind == "index" else kind)


def load_state_dict(model: LMModel, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load an in-memory state dict (Kyutai's naming, published or in-memory, or ours).

    Raises CheckpointError naming unexpected, mis-shaped, duplicated, missing and non-finite tensors.
    """
    load_checkpoint(model, state_dict, kyutai_placement, name=source)


def build_empty(cfg: LMConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> LMModel:
    """An LMModel with allocated but uninitialised parameters (built on meta: no wasted random init)."""
    with torch.device("meta"):
        model = LMModel(cfg, dtype=dtype)
    return model.to_empty(device=device)


def load_lm(
    path: str | Path,
    cfg: LMConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LMModel:
    """Load a `model.safetensors` (Kyutai's or ours) into a new LMModel in eval mode; cfg None = moshiko 7B.

    Names and shapes are checked from the file's header first (on a meta model, no data read); then tensors
    are read one at a time and cast to `dtype` while copying into the model, allocated once.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LM checkpoint not found: {path}")
    cfg = cfg or LMConfig.moshiko_7b()
    with open_safetensors(path) as (_, header, _):
        # Names and shapes against a meta model first: a mismatch is reported before any memory is allocated.
        with torch.device("meta"):
            dry = LMModel(cfg, dtype=dtype)
        plan_checkpoint(dry.state_dict(), {k: tuple(i["shape"]) for k, i in header.items()}, kyutai_placement,
                        str(path))
    model = build_empty(cfg, device=device, dtype=dtype)
    load_checkpoint(model, path, kyutai_placement)
    return model.eval()


def kyutai_state_dict(state: Mapping[str, torch.Tensor], cfg: LMConfig | None = None) -> dict[str, torch.Tensor]:
    """Our LM state dict -> Kyutai's published naming (contiguous CPU tensors): `alpha` norms (1, 1, D),
    per-codebook `emb.{k}` / `depformer_in.{k}` / `linears.{k}`, the depth transformer's attention stacked
    step-major as `in_proj_weight` / `out_proj.weight`. (`cfg` is unused: every shape comes from the tensors.)"""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        t = t.detach().cpu()
        parts = name.split(".")
        if name == "audio_emb.weight":
            out.update({f"emb.{k}.weight": t[k] for k in range(t.shape[0])})
        elif name in ("text_emb.weight", "text_linear.weight"):
            out[name] = t
        elif name == "out_norm.weight":
            out["out_norm.alpha"] = t.view(1, 1, -1)
        elif name.startswith("transformer.layers."):
            i, rest = parts[2], ".".join(parts[3:])
            prefix = f"transformer.layers.{i}"
            out.update(_export_layer(prefix, rest, t, stacked=False))
        elif name == "depformer.in_proj.weight":
            out.update({f"depformer_in.{k}.weight": t[k] for k in range(t.shape[0])})
        elif name == "depformer.audio_emb.weight":
            out.update({f"depformer_emb.{k}.weight": t[k] for k in range(t.shape[0])})
        elif name == "depformer.text_emb.weight":
            out["depformer_text_emb.weight"] = t
        elif name == "depformer.heads.weight":
            out.update({f"linears.{k}.weight": t[k] for k in range(t.shape[0])})
        elif name.startswith("depformer.transformer.layers."):
            i, rest = parts[3], ".".join(parts[4:])
            out.update(_export_layer(f"depformer.layers.{i}", rest, t, stacked=True))
        else:
            raise ValueError(f"cannot export tensor {name}: no Kyutai name for it")
    return {k: v.contiguous() for k, v in out.items()}


def _export_layer(prefix: str, rest: str, t: torch.Tensor, stacked: bool) -> dict[str, torch.Tensor]:
    if rest in ("norm1.weight", "norm2.weight"):
        return {f"{prefix}.{rest.split('.')[0]}.alpha": t.view(1, 1, -1)}
    if rest == "attn.in_proj.weight":  # depth: [S, 3Dd, Dd] -> (S*3Dd, Dd), step-major
        return {f"{prefix}.self_attn.in_proj_weight": t.reshape(-1, t.shape[-1]) if stacked else t}
    if rest == "attn.out_proj.weight":
        return {f"{prefix}.self_attn.out_proj.weight": t.reshape(-1, t.shape[-1]) if stacked else t}
    for w in ("in", "out"):
        if rest == f"ff.linear_{w}.weight":
            if stacked:
                return {f"{prefix}.gating.{k}.linear_{w}.weight": t[k] for k in range(t.shape[0])}
            return {f"{prefix}.gating.linear_{w}.weight": t}
    raise ValueError(f"cannot export tensor {prefix}.{rest}: no Kyutai name for it")
