"""Kyutai's Mimi tensor names <-> ours, and strict loading from safetensors.

Two Kyutai namings are accepted: the in-memory one of the reference package (`self_attn.in_projs.0.weight`,
`self_attn.out_projs.0.weight`) and the one of the published files (`self_attn.in_proj_weight`,
`self_attn.out_proj.weight`). Our own naming is accepted as is, so a state saved from our model loads back.

The checking and copying is the shared strict-loading engine (`openmoshi.checkpoint`): one CheckpointError
listing missing, unexpected and mis-shaped tensors, and refusing NaN/inf weights and corrupt files.

Kyutai's SEANet is one flat `model` Sequential; its indices map to our named stages:
encoder: 0 conv_in, 1+3s residual of stage s, 3+3s down conv of stage s, 14 conv_out;
decoder: 0 conv_in, 2+3s up conv (transposed) of stage s, 3+3s residual of stage s, 14 conv_out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..checkpoint import CheckpointError, Mapper, Placement, load_checkpoint
from ..nn.prepare import prepare_for_inference
from .presets import DEFAULT_MIMI_PRESET, mimi_preset

if TYPE_CHECKING:
    from .mimi import Mimi, MimiConfig

__all__ = ["CheckpointError", "kyutai_to_ours", "ours_to_kyutai", "to_kyutai_state", "kyutai_placement",
           "load_safetensors", "load_state", "load_mimi"]


def _seanet(part: str, idx: int, rest: str, num_stages: int) -> str | None:
    plain = re.fullmatch(r"conv\.conv\.(weight|bias)", rest)
    if idx in (0, 3 * num_stages + 2):
        return f"{part}.{'conv_in' if idx == 0 else 'conv_out'}.{plain[1]}" if plain else None
    stage, offset = divmod(idx - 1, 3) if part == "encoder" else divmod(idx - 2, 3)
    block = re.fullmatch(r"block\.(1|3)\.conv\.conv\.(weight|bias)", rest)
    if part == "encoder":
        if offset == 0 and block:
            return f"encoder.stages.{stage}.residual.{'conv1' if block[1] == '1' else 'conv2'}.{block[2]}"
        if offset == 2 and plain:
            return f"encoder.stages.{stage}.down.{plain[1]}"
    else:
        if offset == 0 and (m := re.fullmatch(r"convtr\.convtr\.(weight|bias)", rest)):
            return f"decoder.stages.{stage}.up.{m[1]}"
        if offset == 1 and block:
            return f"decoder.stages.{stage}.residual.{'conv1' if block[1] == '1' else 'conv2'}.{block[2]}"
    return None


_TRANSFORMER_LEAVES = {
    "self_attn.in_projs.0.weight": "attn.in_proj.weight",
    "self_attn.in_proj_weight": "attn.in_proj.weight",
    "self_attn.out_projs.0.weight": "attn.out_proj.weight",
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "linear1.weight": "ff.linear1.weight",
    "linear2.weight": "ff.linear2.weight",
}


def kyutai_to_ours(name: str, num_stages: int = 4) -> str | None:
    """Our name for one of Kyutai's Mimi tensor names, or None when it has no counterpart."""
    if m := re.fullmatch(r"(encoder|decoder)\.model\.(\d+)\.(.+)", name):
        return _seanet(m[1], int(m[2]), m[3], num_stages)
    if m := re.fullmatch(r"(encoder|decoder)_transformer\.transformer\.layers\.(\d+)\.(.+)", name):
        leaf = _TRANSFORMER_LEAVES.get(m[3], m[3])
        return f"{m[1]}_transformer.layers.{m[2]}.{leaf}"
    if m := re.fullmatch(r"quantizer\.rvq_(first|rest)\.(input_proj|output_proj)\.weight", name):
        return f"quantizer.{'semantic' if m[1] == 'first' else 'acoustic'}.{m[2]}"
    if m := re.fullmatch(r"quantizer\.rvq_(first|rest)\.vq\.layers\.(\d+)\._codebook\.(\w+)", name):
        return f"quantizer.{'semantic' if m[1] == 'first' else 'acoustic'}.codebooks.{m[2]}.{m[3]}"
    if name == "downsample.conv.conv.conv.weight":
        return "downsample.weight"
    if name == "upsample.convtr.convtr.convtr.weight":
        return "upsample.weight"
    return None


# ours -> Kyutai's published leaf names (the in-memory `in_projs.0` forms are accepted on loading only)
_LEAVES = {ours: theirs for theirs, ours in _TRANSFORMER_LEAVES.items() if "projs." not in theirs}


def ours_to_kyutai(name: str, num_stages: int = 4) -> str:
    """Kyutai's published name of one of our Mimi tensor names; KeyError for a name Mimi does not have."""
    if m := re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)", name):
        idx = 0 if m[2] == "conv_in" else 3 * num_stages + 2
        return f"{m[1]}.model.{idx}.conv.conv.{m[3]}"
    if m := re.fullmatch(r"encoder\.stages\.(\d+)\.(residual\.conv1|residual\.conv2|down)\.(weight|bias)", name):
        s = int(m[1])
        if m[2] == "down":
            return f"encoder.model.{3 + 3 * s}.conv.conv.{m[3]}"
        return f"encoder.model.{1 + 3 * s}.block.{1 if m[2].endswith('1') else 3}.conv.conv.{m[3]}"
    if m := re.fullmatch(r"decoder\.stages\.(\d+)\.(residual\.conv1|residual\.conv2|up)\.(weight|bias)", name):
        s = int(m[1])
        if m[2] == "up":
            return f"decoder.model.{2 + 3 * s}.convtr.convtr.{m[3]}"
        return f"decoder.model.{3 + 3 * s}.block.{1 if m[2].endswith('1') else 3}.conv.conv.{m[3]}"
    if m := re.fullmatch(r"(encoder|decoder)_transformer\.layers\.(\d+)\.(.+)", name):
        return f"{m[1]}_transformer.transformer.layers.{m[2]}.{_LEAVES.get(m[3], m[3])}"
    if m := re.fullmatch(r"quantizer\.(semantic|acoustic)\.(input_proj|output_proj)", name):
        return f"quantizer.rvq_{'first' if m[1] == 'semantic' else 'rest'}.{m[2]}.weight"
    if m := re.fullmatch(r"quantizer\.(semantic|acoustic)\.codebooks\.(\d+)\.(\w+)", name):
        return f"quantizer.rvq_{'first' if m[1] == 'semantic' else 'rest'}.vq.layers.{m[2]}._codebook.{m[3]}"
    if name == "downsample.weight":
        return "downsample.conv.conv.conv.weight"
    if name == "upsample.weight":
        return "upsample.convtr.convtr.convtr.weight"
    raise KeyError(f"not a Mimi tensor name: {name}")


def to_kyutai_state(state: Mapping[str, Tensor], num_stages: int = 4) -> dict[str, Tensor]:
    """Our state dict -> Kyutai's published naming (contiguous CPU tensors, ready for safetensors)."""
    return {ours_to_kyutai(k, num_stages): v.detach().cpu().contiguous() for k, v in state.items()}


def kyutai_placement(name: str, num_stages: int = 4) -> Placement | None:
    """The engine's placement of one of Kyutai's Mimi tensor names (None: no counterpart)."""
    ours = kyutai_to_ours(name, num_stages)
    return None if ours is None else Placement(ours)


def _mapper(model: nn.Module) -> Mapper:
    stages = len(model.cfg.seanet.ratios) if hasattr(model, "cfg") else 4
    return lambda name: kyutai_placement(name, stages)


def load_state(model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Strictly load a state in Kyutai's or our naming into `model` (values are cast to the model's dtype).

    Raises CheckpointError listing missing, unexpected, mis-shaped and non-finite tensors; on a mismatch of
    names or shapes nothing is loaded. Copies are in place: parameters keep their memory layout, and the
    codebook caches see the buffers' new versions.
    """
    load_checkpoint(model, state, _mapper(model), name=source)


def load_safetensors(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors file (Kyutai's or our naming) into `model`, strictly.

    Names and shapes are checked from the file's header before any data is read; then each tensor is read
    straight from the file (no mmap, whose pages would count as resident) and copied into place, so the peak
    memory is the model plus its largest tensor.
    """
    load_checkpoint(model, path, _mapper(model))


def load_mimi(path: str | Path, preset: str | MimiConfig = DEFAULT_MIMI_PRESET, dtype: torch.dtype = torch.float32,
              device: str | torch.device = "cpu") -> Mimi:
    """Build a Mimi (a preset name of `MIMI_PRESETS`, or a MimiConfig) and load `path` into it, strictly. Eval mode."""
    from .mimi import Mimi

    cfg = mimi_preset(preset) if isinstance(preset, str) else preset
    try:
        model = Mimi(cfg)
    except (RuntimeError, ValueError, ZeroDivisionError) as err:  # sizes the layers refuse (config.json overrides)
        raise ValueError(f"cannot build Mimi from its config: {err}") from None
    load_safetensors(model, path)
    return prepare_for_inference(model.to(device=device, dtype=dtype).eval())
