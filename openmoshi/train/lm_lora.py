"""LoRA in the LM trainer: the glue to `openmoshi.nn.lora` (adapters) and `openmoshi.lm.lora` (saving them).

`enable_lora(model, section)` wraps the targeted linear layers with adapters and freezes everything else: only
the adapters train (apply it after loading the base weights, before `parallelize`). `save_adapters(state,
folder, section, config)` writes them in Kyutai's / moshi-finetune's layout: `lora.safetensors` plus the
`lora`, `lora_rank`, `lora_scaling`, `lora_name` keys of the folder's config.json, which Kyutai's loader and
ours (`openmoshi chat --model FOLDER`) read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..lm.lora import save_lora
from ..nn.lora import ADAPTER_NAMES, apply_lora
from .lm_config import LoraSection


def is_lora_parameter(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ADAPTER_NAMES


def enable_lora(model: nn.Module, section: LoraSection) -> int:
    """Adapters on `section.targets` (["all"] = every linear, Kyutai's recipe); the base frozen. Returns the
    number of adapted layers."""
    targets = None if list(section.targets) == ["all"] else list(section.targets)
    count = apply_lora(model, rank=section.rank, scaling=section.scaling, targets=targets)
    if not count:
        raise ValueError(f"lora.targets {section.targets} matched no linear layer")
    return count


def save_adapters(state: Mapping[str, torch.Tensor], folder: str | Path, section: LoraSection,
                  kyutai_config: Mapping[str, Any]) -> Path:
    """The adapters of a full state dict (our names), into `folder`/lora.safetensors + its config.json."""
    return save_lora(state, Path(folder), rank=section.rank, scaling=section.scaling,
                     kyutai_config=kyutai_config)
