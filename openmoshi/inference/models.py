"""Loading a Moshi model for the runtime: device and dtype choice, the shared model flags, the three parts.

Finding the files (a local folder or a Hugging Face repo in Kyutai's layout, config.json, offline cache) is
`openmoshi.model_files`, the one resolver every command uses; its names are re-exported here.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..model_files import (
    DTYPES,
    ModelFiles,
    ModelFilesError,
    add_model_arguments,
    files_from_args,
    is_repo_id,
    resolve_model_files,
)

if TYPE_CHECKING:  # the heavy modules (torch too) are imported when models are loaded, not when flags are parsed
    import torch

    from ..codec.mimi import Mimi
    from ..lm.model import LMModel
    from ..lm.text import TextTokenizer

__all__ = ["ModelFiles", "ModelFilesError", "LoadedModels", "is_repo_id", "resolve_model_files", "resolve_device",
           "resolve_dtype", "add_model_arguments", "files_from_args", "load_models", "models_from_args"]



def resolve_device(name: str | None) -> torch.device:
    """'cpu', 'cuda', 'cuda:1', 'mps'; None: cuda when available, else cpu."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available (use --device cpu)")
    if device.type == "meta":
        raise ValueError("device 'meta' holds no data: use cpu or cuda")
    return device


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """float32 by default on CPU (bf16 matmuls are slow there), bfloat16 on accelerators."""
    import torch

    if name is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}")
    return getattr(torch, DTYPES[name])


@dataclass
class LoadedModels:
    """A model ready to run: Mimi (float32), the LM (in `dtype`) and the tokenizer, on `device`."""

    files: ModelFiles
    mimi: Mimi
    lm: LMModel
    tokenizer: TextTokenizer
    device: torch.device
    dtype: torch.dtype


def load_models(files: ModelFiles, device: str | torch.device | None = None, dtype: str | None = None
                ) -> LoadedModels:
    """Build and load the three parts. Mimi stays float32 (small, and its output is what users hear).

    The cheap checks come first (Mimi's config, the tokenizer, the LoRA file's names and shapes), so a bad file
    is reported before the LM's weights are read. LoRA adapters (`files.lora`) are merged into the LM's weights
    (no cost per step). Errors: CheckpointError (weights), TokenizerError (tokenizer), LoraError (adapters),
    ValueError (config).
    """
    import torch

    from ..codec.checkpoint import load_mimi
    from ..codec.presets import mimi_config_from_overrides
    from ..lm.checkpoint import load_lm
    from ..lm.lora import load_lora, read_plan
    from ..lm.text import TextTokenizer

    if files.moshi is None or files.mimi is None or files.tokenizer is None:
        raise ValueError("load_models needs the three files (resolve them with every role)")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    lm_cfg = files.repo_config.lm
    mimi_cfg = mimi_config_from_overrides(files.mimi_overrides)
    tokenizer = TextTokenizer.for_model(files.tokenizer, lm_cfg)
    lora = files.lora
    if lora is not None:
        read_plan(lora.path, lm_cfg, rank=lora.rank, scaling=lora.scaling)
    mimi = load_mimi(files.mimi, mimi_cfg, device=dev)
    lm = load_lm(files.moshi, lm_cfg, device=dev, dtype=dt)
    if lora is not None:
        load_lora(lm, lora.path, rank=lora.rank, scaling=lora.scaling, merge=True)
    return LoadedModels(files, mimi, lm, tokenizer, dev, dt)


def models_from_args(args: argparse.Namespace) -> LoadedModels:
    return load_models(files_from_args(args), args.device, args.dtype)
