"""Export a trained LM as a model folder in Kyutai's layout: what `openmoshi chat --model DIR` and Kyutai's loader take.

RUN/export/
  model.safetensors                              the LM under Kyutai's published tensor names
  config.json                                    Kyutai's LM kwargs (+ file names, lm_gen_config, our "mimi")
  tokenizer-e351c8d8-checkpoint125.safetensors   Mimi, copied from the model the run started from
  tokenizer_spm_32k_3.model                      the text tokenizer, likewise

The tensor names come from the one adapter of Kyutai's names, lm/checkpoint.py (`kyutai_state_dict`, the inverse
of its loading mapping).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..io_safety import write_text
from ..lm.checkpoint import kyutai_state_dict
from ..lm.config import DEFAULT_MIMI_NAME, DEFAULT_MOSHI_NAME, DEFAULT_TOKENIZER_NAME, LMConfig


def kyutai_config(cfg: LMConfig) -> dict[str, Any]:
    """Kyutai's LM kwargs (config.json) that `parse_kyutai_config` reads back to `cfg`."""
    def ff_of(hidden: int, dim: int) -> int:
        ff = 3 * hidden // 2  # Kyutai's gated width is 2 * dim_feedforward // 3 (unless ff == 4 * dim)
        if 2 * ff // 3 != hidden or ff == 4 * dim:
            raise ValueError(f"a gated hidden width of {hidden} (dim {dim}) has no Kyutai dim_feedforward")
        return ff

    return {
        "dim": cfg.dim, "text_card": cfg.text_card, "existing_text_padding_id": cfg.text_padding_id,
        "existing_text_end_padding_id": cfg.text_end_padding_id, "n_q": cfg.n_q, "dep_q": cfg.dep_q,
        "card": cfg.card, "num_heads": cfg.num_heads, "num_layers": cfg.num_layers,
        "dim_feedforward": ff_of(cfg.hidden, cfg.dim), "causal": True, "layer_scale": None,
        "context": cfg.context, "max_period": cfg.max_period, "gating": "silu", "norm": "rms_norm_f32",
        "positional_embedding": "rope", "depformer_dim": cfg.depformer_dim,
        "depformer_dim_feedforward": ff_of(cfg.depformer_hidden, cfg.depformer_dim),
        "depformer_num_heads": cfg.depformer_num_heads, "depformer_num_layers": cfg.depformer_num_layers,
        "depformer_layer_scale": None, "depformer_multi_linear": True, "depformer_context": cfg.dep_q,
        "depformer_max_period": 10000, "depformer_gating": "silu", "depformer_pos_emb": "none",
        "depformer_weights_per_step": True, "delays": list(cfg.delays),
    }


def _copy(src: Path, dst: Path) -> None:
    """Hard link when possible (no extra space), else a copy; never through a half-written file."""
    tmp = dst.with_name(f".{dst.name}.part")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def export_lm(folder: str | Path, state: Mapping[str, torch.Tensor], cfg: LMConfig, *, mimi: Path | None,
              tokenizer: Path | None, mimi_overrides: Mapping[str, Any] | None = None,
              lm_gen_config: Mapping[str, Any] | None = None, dtype: torch.dtype | None = None,
              base_weights: Path | None = None) -> Path:
    """Write the model folder (see the module docstring). `state`: our full LM state dict (CPU).
    `base_weights`: an existing model.safetensors holding exactly these weights (a LoRA run's frozen base):
    linked or copied instead of written from `state`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if base_weights is not None:
        _copy(base_weights, folder / DEFAULT_MOSHI_NAME)
    else:
        tensors = kyutai_state_dict(state, cfg)
        if dtype is not None:
            tensors = {k: v.to(dtype) for k, v in tensors.items()}
        tmp = folder / f".{DEFAULT_MOSHI_NAME}.part"
        save_file(tensors, str(tmp))  # streamed to disk (a 7B model is not held twice in memory), then renamed
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, folder / DEFAULT_MOSHI_NAME)
    config: dict[str, Any] = {**kyutai_config(cfg), "moshi_name": DEFAULT_MOSHI_NAME}
    if mimi is not None:
        _copy(mimi, folder / DEFAULT_MIMI_NAME)
        config["mimi_name"] = DEFAULT_MIMI_NAME
    if tokenizer is not None:
        _copy(tokenizer, folder / DEFAULT_TOKENIZER_NAME)
        config["tokenizer_name"] = DEFAULT_TOKENIZER_NAME
    if lm_gen_config:
        config["lm_gen_config"] = dict(lm_gen_config)
    if mimi_overrides:
        config["mimi"] = dict(mimi_overrides)
    write_text(folder / "config.json", json.dumps(config, indent=1) + "\n")
    return folder


def read_export_config(folder: str | Path) -> dict[str, Any]:
    """The config.json `export_lm` wrote in `folder`."""
    return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
