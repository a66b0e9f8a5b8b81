"""Exporting a trained codec: our tensor names -> Kyutai's published Mimi naming, and the export folder.

`export_codec(folder, state, cfg)` writes `folder/mimi.safetensors` (Kyutai's published names, the weight EMA
when the trainer passes it) and `folder/config.json` (`{"mimi_name": "mimi.safetensors", "mimi": {...}}`: the
MimiConfig as the overrides of `codec/presets.py`). Kyutai's loaders read the safetensors at the released size;
ours read the folder: `openmoshi eval codec --model FOLDER`, `openmoshi codec --weights FOLDER/mimi.safetensors
--preset ...`, and a full model folder whose config.json carries the same `mimi` object.

The naming itself lives with the rest of Kyutai's names, in `codec/checkpoint.py` (`ours_to_kyutai`, the inverse
of `kyutai_to_ours`, tested name by name on both sizes).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..codec.checkpoint import to_kyutai_state

__all__ = ["CONFIG_NAME", "ENCODER_MODULES", "ENCODER_SIDE", "WEIGHTS_NAME", "codes_differ", "export_codec",
           "mimi_overrides"]

if TYPE_CHECKING:
    from ..codec.mimi import MimiConfig

WEIGHTS_NAME = "mimi.safetensors"
CONFIG_NAME = "config.json"
# The modules that make the codes (the encoder, its transformer, the downsampling, the quantizer): our attribute
# names, which are also the top-level prefixes of Kyutai's tensor names.
ENCODER_MODULES = ("encoder", "encoder_transformer", "downsample", "quantizer")
ENCODER_SIDE = tuple(f"{name}." for name in ENCODER_MODULES)


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


def codes_differ(a: str | Path, b: str | Path) -> list[str]:
    """The encoder-side tensors in which two exported mimi.safetensors differ (missing ones included): empty when
    both make the same codes, as an export of a decoder-only phase and its `export-frozen/` must."""
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    keys = sorted(k for k in set(ta) | set(tb) if k.startswith(ENCODER_SIDE))
    return [k for k in keys if k not in ta or k not in tb or not torch.equal(ta[k], tb[k])]
