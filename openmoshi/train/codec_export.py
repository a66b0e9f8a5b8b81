"""Exporting a trained codec: our tensor names -> Kyutai's published Mimi naming, and the export folder.

`export_codec(folder, state, cfg)` writes `folder/mimi.safetensors` (Kyutai's published names, the weight EMA
when the trainer passes it) and `folder/config.json` (`{"mimi_name": "mimi.safetensors", "mimi": {...}}`: the
MimiConfig as the overrides of `codec/presets.py`). Kyutai's loaders read the safetensors at the released size;
ours read the folder: `openmoshi eval codec --model FOLDER`, `openmoshi codec --weights FOLDER/mimi.safetensors
--preset ...`, and a full model folder whose config.json carries the same `mimi` object.

`ours_to_kyutai` is the inverse of `codec.checkpoint.kyutai_to_ours` (tested name by name on both sizes).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..codec.mimi import MimiConfig

WEIGHTS_NAME = "mimi.safetensors"
CONFIG_NAME = "config.json"
_LEAVES = {"attn.in_proj.weight": "self_attn.in_proj_weight", "attn.out_proj.weight": "self_attn.out_proj.weight",
           "ff.linear1.weight": "linear1.weight", "ff.linear2.weight": "linear2.weight"}


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


def mimi_overrides(cfg: MimiConfig) -> dict[str, Any]:
    """config.json's `"mimi"` object for `cfg`: a preset name when it is one, else every field."""
    from ..codec.presets import MIMI_PRESETS, mimi_preset

    for name in MIMI_PRESETS:
        if mimi_preset(name) == cfg:
            return {"preset": name}
    return json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples -> lists


def export_codec(folder: str | Path, state: Mapping[str, Tensor], cfg: MimiConfig) -> Path:
    """Write folder/mimi.safetensors (Kyutai's naming) and folder/config.json, atomically; returns the weights."""
    from safetensors.torch import save

    from ..io_safety import write_bytes, write_text

    folder = Path(folder)
    tensors = to_kyutai_state(state, len(cfg.seanet.ratios))
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"refusing to export non-finite weights: {bad[:5]}")
    weights = folder / WEIGHTS_NAME
    write_bytes(weights, save(tensors, metadata={"format": "pt", "source": "openmoshi train codec"}))
    write_text(folder / CONFIG_NAME, json.dumps({"mimi_name": WEIGHTS_NAME, "mimi": mimi_overrides(cfg)},
                                                indent=2) + "\n")
    return weights
