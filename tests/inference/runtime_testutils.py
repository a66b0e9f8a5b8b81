"""Helpers for the runtime tests: a tiny Moshi in the layout of Kyutai's model repos."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# Shared test helpers of the other packages: the FACTS.md Mimi init and the tiny SentencePiece trainer.
_TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_TESTS / "codec"), str(_TESTS / "lm")]

from codec_testutils import random_tensor  # noqa: E402
from spm_testutils import train_tiny_spm  # noqa: E402,F401  (re-exported for the runtime tests)

# ---- a tiny Moshi in the layout of Kyutai's model repos --------------------------------------------------

TINY_RATIOS = [2, 2, 2, 2]  # 4 SEANet stages, as in Kyutai's Mimi (its published names index 4 stages)


def tiny_lm_config(**overrides):
    from openmoshi.lm.config import LMConfig

    # The tokenizer's vocabulary fills the text card, so every sampled text token is a real piece.
    return LMConfig.tiny(**{"text_card": 320, **overrides})


def _kyutai_tiny_mimi_config() -> dict:
    """Kyutai's Mimi constructor settings (loaders._mimi_config layout) at the tiny size of MimiConfig.tiny."""
    seanet = {"channels": 1, "dimension": 32, "causal": True, "n_filters": 4, "n_residual_layers": 1,
              "activation": "ELU", "compress": 2, "dilation_base": 2, "disable_norm_outer_blocks": 0,
              "kernel_size": 7, "residual_kernel_size": 3, "last_kernel_size": 3, "norm": "none",
              "pad_mode": "constant", "ratios": TINY_RATIOS, "true_skip": True}
    transformer = {"d_model": 32, "num_heads": 2, "num_layers": 2, "causal": True, "layer_scale": 0.01,
                   "context": 10, "conv_layout": True, "max_period": 10000, "gating": "none", "norm": "layer_norm",
                   "positional_embedding": "rope", "dim_feedforward": 64, "input_dimension": 32,
                   "output_dimensions": [32]}
    quantizer = {"dimension": 16, "n_q": 8, "bins": 64, "input_dimension": 32, "output_dimension": 32}
    hop = 1
    for r in TINY_RATIOS:
        hop *= r
    return {"sample_rate": 24000, "channels": 1, "frame_rate": 24000 / (2 * hop), "seanet": seanet,
            "quantizer": quantizer, "transformer": transformer}


def tiny_mimi_state(seed: int = 0) -> dict:
    """Random weights for the tiny Mimi, named as in Kyutai's published files (reference model's own names)."""
    import torch
    from moshi.models.loaders import get_mimi

    ref = get_mimi(None, mimi_config=_kyutai_tiny_mimi_config())
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in ref.state_dict().items():
        name = name.replace("self_attn.in_projs.0.weight", "self_attn.in_proj_weight")
        name = name.replace("self_attn.out_projs.0.weight", "self_attn.out_proj.weight")
        out[name] = random_tensor(name, tuple(value.shape), gen).to(value.dtype).contiguous()
    return out


MIMI_OVERRIDES = {"preset": "tiny", "seanet": {"ratios": TINY_RATIOS}}


def build_tiny_repo(folder: Path, seed: int = 0, lm_cfg=None, names: dict | None = None) -> Path:
    """A folder in Kyutai's repo layout: model.safetensors (published naming), the Mimi file, the SentencePiece
    model and a config.json describing the tiny sizes (plus our "mimi" override). Returns the folder."""
    import json
    import sys

    from safetensors.torch import save_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
    from lm_testutils import kyutai_kwargs, make_reference, published_state_dict

    names = {"moshi_name": "model.safetensors", "mimi_name": "tokenizer-e351c8d8-checkpoint125.safetensors",
             "tokenizer_name": "tokenizer_spm_32k_3.model", **(names or {})}
    cfg = lm_cfg or tiny_lm_config()
    folder.mkdir(parents=True, exist_ok=True)
    ref = make_reference(cfg, seed=seed)
    save_file({k: v.contiguous() for k, v in published_state_dict(ref).items()}, str(folder / names["moshi_name"]))
    save_file(tiny_mimi_state(seed), str(folder / names["mimi_name"]))
    spm = train_tiny_spm(folder / "spm_tmp", vocab_size=cfg.text_card)
    spm.rename(folder / names["tokenizer_name"])
    (folder / "spm_tmp").rmdir()
    config = {**kyutai_kwargs(cfg), **names, "mimi": MIMI_OVERRIDES}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder


@pytest.fixture
def single_thread():
    """Tiny models gain nothing from threads, and on a shared machine 2 threads can be 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
