"""Loading language-model weights: Kyutai's naming (published files and in-memory) and ours, strictly.

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
Every target element must be written exactly once; anything unknown, missing or mis-shaped is an error naming the
tensors. Weights are read from the file tensor by tensor (no mmap) and copied into a model materialised once
(built on the meta device), so a 15 GB checkpoint needs about 15 GB, not twice that.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ..safetensors_io import CheckpointError, lazy_tensors, read_header
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


class CheckpointMismatch(CheckpointError):
    """The checkpoint does not fit the model: the message names the offending tensors."""


def _source_view(kind: str, src: torch.Tensor, target: torch.Tensor, index: int | None) -> torch.Tensor | None:
    """`src` reshaped to the (slice of the) target it fills, or None when its shape does not fit."""
    if index is not None:
        if target.dim() == 0 or index >= target.shape[0]:
            return None
        want = target.shape[1:]
    else:
        want = target.shape
    if kind == "alpha":
        ok = src.dim() == 3 and tuple(src.shape[:2]) == (1, 1) and src.shape[2:] == want
        return src.reshape(want) if ok else None
    if kind == "stacked":
        ok = src.dim() == 2 and len(want) == 3 and tuple(src.shape) == (want[0] * want[1], want[2])
        return src.view(want) if ok else None
    return src if tuple(src.shape) == tuple(want) else None


def load_into(model: LMModel, tensors: Iterable[tuple[str, Callable[[], torch.Tensor]]]) -> None:
    """Copy named tensors (Kyutai's or our naming; getters called one at a time) into `model`'s parameters.

    Raises CheckpointMismatch naming unexpected, mis-shaped, duplicated and missing tensors.
    """
    params = dict(model.named_parameters())
    # Coverage per parameter: a bool per leading slice for stacked targets, one flag otherwise.
    written: dict[str, torch.Tensor] = {}
    unexpected, misshaped, duplicated = [], [], []
    for name, get in tensors:
        if name in params:
            target_name, index, kind = name, None, "same"
        else:
            mapped = map_kyutai_name(name)
            if mapped is None or mapped[0] not in params:
                unexpected.append(name)
                continue
            target_name, index, kind = mapped
        target = params[target_name]
        cover = written.setdefault(target_name, torch.zeros(max(target.shape[0], 1) if target.dim() else 1,
                                                            dtype=torch.bool))
        src = get()
        view = _source_view(kind, src, target, index)
        if view is None:
            want = tuple(target.shape[1:]) if index is not None else tuple(target.shape)
            misshaped.append(f"{name} {tuple(src.shape)} (-> {target_name}{'' if index is None else f'[{index}]'}"
                             f" {want})")
            continue
        sl = slice(None) if index is None else slice(index, index + 1)
        if cover[sl].any():
            duplicated.append(name)
            continue
        cover[sl] = True
        with torch.no_grad():
            (target if index is None else target[index]).copy_(view)
        del src, view
    missing = []
    for pname in params:
        cover = written.get(pname)
        if cover is None:
            missing.append(pname)
        elif not cover.all():
            missing.append(f"{pname}{[i for i, c in enumerate(cover.tolist()) if not c]}")
    problems = []
    for label, items in (("unexpected", unexpected), ("mis-shaped", misshaped), ("duplicated", duplicated),
                         ("missing", missing)):
        if items:
            shown = ", ".join(items[:12]) + (f" ... ({len(items)} in all)" if len(items) > 12 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointMismatch("checkpoint does not match the model: " + "; ".join(problems))


def load_state_dict(model: LMModel, state_dict: dict[str, torch.Tensor]) -> None:
    """Strictly load an in-memory state dict (Kyutai's naming, published or in-memory, or ours)."""
    load_into(model, ((k, (lambda v=v: v)) for k, v in state_dict.items()))


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
    if path.suffix not in (".safetensors", ".sft"):
        raise ValueError(f"only safetensors checkpoints are supported, got {path.name}")
    cfg = cfg or LMConfig.moshiko_7b()
    with open(path, "rb") as f:
        header, data_start = read_header(f, path)
        with torch.device("meta"):
            dry = LMModel(cfg, dtype=dtype)
        load_into(dry, ((k, (lambda i=i: torch.empty(i["shape"], device="meta"))) for k, i in header.items()))
        model = build_empty(cfg, device=device, dtype=dtype)
        load_into(model, lazy_tensors(f, header, data_start, path))
    return model.eval()
