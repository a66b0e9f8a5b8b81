"""Kyutai's side of the tests and benchmarks, without importing Kyutai's `moshi`: its LM kwargs for one of our
configs, random weights for a reference model (its class is passed in), the published file naming, and tiny
models written in the layout of Kyutai's model repos (config.json, model.safetensors, Mimi, the tokenizer).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..lm.config import DEFAULT_MIMI_NAME, DEFAULT_MOSHI_NAME, DEFAULT_TOKENIZER_NAME, LMConfig
from .spm import train_tiny_spm

TINY_RATIOS = [2, 2, 2, 2]  # 4 SEANet stages, as in Kyutai's Mimi (its published names index 4 stages)
MIMI_OVERRIDES = {"preset": "tiny", "seanet": {"ratios": TINY_RATIOS}}  # our config.json "mimi" extension


def kyutai_kwargs(cfg: LMConfig) -> dict[str, Any]:
    """Kyutai's LMModel kwargs (the config.json layout) for our config."""
    assert cfg.hidden % 2 == 0 and cfg.depformer_hidden % 2 == 0
    ff, dep_ff = 3 * cfg.hidden // 2, 3 * cfg.depformer_hidden // 2  # Kyutai: hidden = 2 * ff // 3
    assert ff != 4 * cfg.dim and dep_ff != 4 * cfg.depformer_dim
    return {
        "dim": cfg.dim, "text_card": cfg.text_card, "existing_text_padding_id": cfg.text_padding_id,
        "n_q": cfg.n_q, "dep_q": cfg.dep_q, "card": cfg.card, "num_heads": cfg.num_heads,
        "num_layers": cfg.num_layers, "hidden_scale": ff / cfg.dim, "causal": True, "layer_scale": None,
        "context": cfg.context, "max_period": cfg.max_period, "gating": "silu", "norm": "rms_norm_f32",
        "positional_embedding": "rope", "depformer_dim": cfg.depformer_dim,
        "depformer_dim_feedforward": dep_ff, "depformer_num_heads": cfg.depformer_num_heads,
        "depformer_num_layers": cfg.depformer_num_layers, "depformer_layer_scale": None,
        "depformer_multi_linear": True, "depformer_context": cfg.dep_q, "depformer_max_period": 10000,
        "depformer_gating": "silu", "depformer_pos_emb": "none", "depformer_weights_per_step": True,
        "delays": list(cfg.delays),
    }


def randomize_reference(ref: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight of a reference LM random (N(0, 1/fan_in); norm scales `alpha` around 1), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("alpha"):
                noise = torch.randn(p.shape, generator=gen)
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
    return ref.eval()


def make_reference(cfg: LMConfig, ref_cls: Callable[..., torch.nn.Module], seed: int = 0,
                   dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Kyutai's LMModel (`ref_cls`, i.e. `moshi.models.lm.LMModel`) for our config, with random weights."""
    return randomize_reference(ref_cls(**kyutai_kwargs(cfg), dtype=dtype), seed)


def published_state_dict(state: dict[str, torch.Tensor] | torch.nn.Module) -> dict[str, torch.Tensor]:
    """A reference LM's weights (its state dict, or the model) under the naming of Kyutai's model.safetensors."""
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    out = {}
    stacks: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for name, t in state.items():
        for kind, pub in (("in_projs", "in_proj_weight"), ("out_projs", "out_proj.weight")):
            marker = f".self_attn.{kind}."
            if marker in name:
                prefix, rest = name.split(marker)
                stacks.setdefault(f"{prefix}.self_attn.{pub}", []).append((int(rest.split(".")[0]), t))
                break
        else:
            out[name] = t.clone()
    for name, parts in stacks.items():
        out[name] = torch.cat([t for _, t in sorted(parts, key=lambda p: p[0])], dim=0)
    return out


def tiny_lm_config(**overrides: Any) -> LMConfig:
    # The tokenizer's vocabulary fills the text card, so every sampled text token is a real piece.
    return LMConfig.tiny(**{"text_card": 320, **overrides})


def kyutai_tiny_mimi_config() -> dict[str, Any]:
    """Kyutai's Mimi constructor settings (`loaders._mimi_config` layout) at the tiny size of MimiConfig.tiny,
    with 4 SEANet stages (TINY_RATIOS); for `moshi.models.loaders.get_mimi(None, mimi_config=...)`."""
    seanet = {"channels": 1, "dimension": 32, "causal": True, "n_filters": 4, "n_residual_layers": 1,
              "activation": "ELU", "compress": 2, "dilation_base": 2, "disable_norm_outer_blocks": 0,
              "kernel_size": 7, "residual_kernel_size": 3, "last_kernel_size": 3, "norm": "none",
              "pad_mode": "constant", "ratios": TINY_RATIOS, "true_skip": True}
    transformer = {"d_model": 32, "num_heads": 2, "num_layers": 2, "causal": True, "layer_scale": 0.01,
                   "context": 10, "conv_layout": True, "max_period": 10000, "gating": "none", "norm": "layer_norm",
                   "positional_embedding": "rope", "dim_feedforward": 64, "input_dimension": 32,
                   "output_dimensions": [32]}
    quantizer = {"dimension": 16, "n_q": 8, "bins": 64, "input_dimension": 32, "output_dimension": 32}
    hop = math.prod(TINY_RATIOS)
    return {"sample_rate": 24000, "channels": 1, "frame_rate": 24000 / (2 * hop), "seanet": seanet,
            "quantizer": quantizer, "transformer": transformer}


def write_kyutai_repo(folder: Path, cfg: LMConfig, lm_state: dict[str, torch.Tensor],
                      mimi_state: dict[str, torch.Tensor], names: dict[str, str] | None = None,
                      mimi_overrides: dict[str, Any] | None = None) -> Path:
    """A folder in Kyutai's repo layout: the LM and Mimi states (any naming the loaders accept), a tiny
    SentencePiece model of `cfg.text_card` pieces, and a config.json of `cfg` (plus our "mimi" override)."""
    from safetensors.torch import save_file

    names = {"moshi_name": DEFAULT_MOSHI_NAME, "mimi_name": DEFAULT_MIMI_NAME,
             "tokenizer_name": DEFAULT_TOKENIZER_NAME, **(names or {})}
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in lm_state.items()}, str(folder / names["moshi_name"]))
    save_file({k: v.contiguous() for k, v in mimi_state.items()}, str(folder / names["mimi_name"]))
    spm = train_tiny_spm(folder / "spm_tmp", vocab_size=cfg.text_card)
    spm.rename(folder / names["tokenizer_name"])
    (folder / "spm_tmp").rmdir()
    config = {**kyutai_kwargs(cfg), **names, "mimi": MIMI_OVERRIDES if mimi_overrides is None else mimi_overrides}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder
