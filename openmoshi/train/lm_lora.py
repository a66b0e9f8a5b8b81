"""LoRA in the LM trainer: the glue to `openmoshi.nn.lora` (adapters) and `openmoshi.lm.lora` (saving them).

`enable_lora(model, section)` adds adapters to the targeted linear layers and freezes everything else: only
the adapters train. `save_adapters(model, folder, section)` writes them in Kyutai's / moshi-finetune's layout
(the adapter file plus the `lora`, `lora_rank`, `lora_scaling` keys of config.json), via the LoRA package.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .lm_config import LoraSection


def _modules():
    try:
        from ..lm import lora as lm_lora
        from ..nn import lora as nn_lora
    except ImportError:
        raise ValueError("this build has no LoRA support (openmoshi.nn.lora / openmoshi.lm.lora): "
                         "set lora.enabled=false") from None
    return nn_lora, lm_lora


def is_lora_parameter(name: str) -> bool:
    return "lora" in name.split(".")[-2:][0] or ".lora" in name or name.startswith("lora")


def enable_lora(model: nn.Module, section: LoraSection) -> int:
    """Adapters on `section.targets`; the base frozen. Returns the number of adapted layers."""
    nn_lora, _ = _modules()
    count = nn_lora.apply_lora(model, rank=section.rank, scaling=section.scaling, targets=list(section.targets))
    if not count:
        raise ValueError(f"lora.targets {section.targets} matched no linear layer")
    for name, p in model.named_parameters():
        p.requires_grad_(is_lora_parameter(name))
    return count


def save_adapters(model: nn.Module, folder: str | Path, section: LoraSection, state=None) -> Path:
    """The adapters alone, in the LoRA package's (Kyutai-compatible) layout, into `folder`."""
    _, lm_lora = _modules()
    return lm_lora.save_lora(model if state is None else state, Path(folder), rank=section.rank,
                             scaling=section.scaling)
