"""Test helpers: the reference `moshi` LMModel built from one of our LMConfigs, with random weights."""

from __future__ import annotations

import math
import os

import torch

os.environ.setdefault("NO_TORCH_COMPILE", "1")

from moshi.models.lm import LMModel as RefLMModel  # noqa: E402

from openmoshi.lm.checkpoint import load_state_dict  # noqa: E402
from openmoshi.lm.config import LMConfig  # noqa: E402
from openmoshi.lm.model import LMModel  # noqa: E402


def kyutai_kwargs(cfg: LMConfig) -> dict:
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


def make_reference(cfg: LMConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> RefLMModel:
    """The reference model with every weight random (norm scales around 1), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    ref = RefLMModel(**kyutai_kwargs(cfg), dtype=dtype)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("alpha"):
                noise = torch.randn(p.shape, generator=gen)
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
    return ref.eval()


def make_pair(cfg: LMConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[RefLMModel, LMModel]:
    """(reference, ours) with the same random weights, ours loaded through the Kyutai-naming adapter."""
    ref = make_reference(cfg, seed, dtype)
    ours = LMModel(cfg, dtype=dtype)
    load_state_dict(ours, ref.state_dict())
    return ref, ours.eval()


def published_state_dict(ref: RefLMModel) -> dict[str, torch.Tensor]:
    """The reference's weights under the naming of Kyutai's published model.safetensors."""
    out = {}
    stacks: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for name, t in ref.state_dict().items():
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


def one_thread():
    """Generator-fixture body: tiny models run fastest on one thread (and avoid spinning on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
