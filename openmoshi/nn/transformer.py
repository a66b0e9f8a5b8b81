"""A pre-norm transformer stack and its config, shared by Mimi's bottleneck transformers and the language model.

Layer: x = x + ls1(attn(norm1(x))); x = x + ls2(ff(norm2(x))). Layout [B, T, D].
With `num_steps` > 0 (the depth transformer) attention projections and feed-forward weights are per step: the
t-th position of a sequence uses the t-th weights; norms are shared. Such a stack is run whole (training) or one
step at a time, `forward(x, step, kv)` with a key/value buffer from `new_kv` (generation): the same modules
either way, so wrappers and hooks (FSDP, LoRA, forward hooks) see both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, KVBuffer, new_kv_buffers
from .linear import make_linear
from .norms import LayerScale, make_norm


@dataclass
class TransformerConfig:
    d_model: int
    num_heads: int
    num_layers: int
    dim_feedforward: int
    causal: bool = True
    context: int | None = None  # attention window in steps, None = unbounded (batch only)
    rope_max_period: float | None = 10_000.0  # None: no positional embedding
    norm: str = "layer_norm"  # "layer_norm" | "rms_norm" (fp32)
    norm_eps: float = 1e-5
    layer_scale: float | None = None  # init of LayerScale on both branches, None = no LayerScale
    gating: str = "none"  # "none": linear1 -> GELU -> linear2; "silu": SiLU-gated linear_in / linear_out
    num_steps: int = 0  # > 0: per-step weights (depth transformer)
    stream_chunk: int = 1  # longest streaming call (steps) attended in place; longer ones copy the cache

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}")
        if self.gating not in ("none", "silu"):
            raise ValueError(f"gating must be 'none' or 'silu', got {self.gating!r}")
        if self.norm not in ("layer_norm", "rms_norm"):
            raise ValueError(f"norm must be 'layer_norm' or 'rms_norm', got {self.norm!r}")
        if self.num_steps and self.gating == "none":
            raise ValueError("per-step weights need the gated feed-forward (gating='silu')")


class FeedForward(nn.Module):
    """GELU MLP (`linear1`, `linear2`) or SiLU-gated (`linear_in` [2H, D]: silu(first half) * second half,
    then `linear_out` [D, H]); bias-free; per-step weights when `num_steps` > 0."""

    def __init__(self, dim: int, hidden: int, gating: str, num_steps: int = 0, device=None, dtype=None) -> None:
        super().__init__()
        self.gated = gating == "silu"
        self.dim, self.hidden, self.num_steps = dim, hidden, num_steps
        kw = {"device": device, "dtype": dtype}
        if self.gated:
            self.linear_in = make_linear(dim, 2 * hidden, num_steps, **kw)
            self.linear_out = make_linear(hidden, dim, num_steps, **kw)
        else:
            self.linear1 = make_linear(dim, hidden, **kw)
            self.linear2 = make_linear(hidden, dim, **kw)

    def forward(self, x: torch.Tensor, step: int = 0) -> torch.Tensor:
        if self.gated and self.num_steps:
            gate, up = self.linear_in(x, step).chunk(2, dim=-1)
            return self.linear_out(F.silu(gate) * up, step)
        if self.gated:
            gate, up = self.linear_in(x).chunk(2, dim=-1)
            return self.linear_out(F.silu(gate) * up)
        return self.linear2(F.gelu(self.linear1(x)))


class TransformerLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        d = cfg.d_model
        self.norm1 = make_norm(cfg.norm, d, cfg.norm_eps, **kw)
        self.attn = Attention(d, cfg.num_heads, cfg.context, cfg.rope_max_period, cfg.causal, cfg.num_steps,
                              cfg.stream_chunk, **kw)
        self.norm2 = make_norm(cfg.norm, d, cfg.norm_eps, **kw)
        self.ff = FeedForward(d, cfg.dim_feedforward, cfg.gating, cfg.num_steps, **kw)
        self.layer_scale_1: LayerScale | None = None
        self.layer_scale_2: LayerScale | None = None
        if cfg.layer_scale is not None:
            self.layer_scale_1 = LayerScale(d, cfg.layer_scale, **kw)
            self.layer_scale_2 = LayerScale(d, cfg.layer_scale, **kw)

    def forward(self, x: torch.Tensor, step: int = 0, kv: KVBuffer | None = None) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]; `step` / `kv`: see Attention.forward."""
        a = self.attn(self.norm1(x), step, kv)
        x = x + (a if self.layer_scale_1 is None else self.layer_scale_1(a))
        f = self.ff(self.norm2(x), step)
        return x + (f if self.layer_scale_2 is None else self.layer_scale_2(f))


class Transformer(nn.Module):
    """A stack of `num_layers` TransformerLayers: x [B, T, D] -> [B, T, D]. Streams under `streaming(...)`."""

    def __init__(self, cfg: TransformerConfig, device=None, dtype=None) -> None:
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(TransformerLayer(cfg, device=device, dtype=dtype) for _ in range(cfg.num_layers))

    def forward(self, x: torch.Tensor, step: int = 0, kv: list[KVBuffer] | None = None) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]. Batch, or streaming under `streaming(...)`; with `kv` (from `new_kv`) x holds
        steps step..step+T-1 of a short sequence whose earlier steps are in `kv` (one buffer per layer)."""
        if kv is None:
            for layer in self.layers:
                x = layer(x, step)
        else:
            for layer, layer_kv in zip(self.layers, kv, strict=True):
                x = layer(x, step, layer_kv)
        return x

    def new_kv(self, batch_size: int, length: int) -> list[KVBuffer]:
        """Key/value buffers (one per layer, [2, B, H, length, Dh] each, one allocation) for step-by-step calls;
        reusable across sequences (each step overwrites its slot before reading it)."""
        return new_kv_buffers([layer.attn for layer in self.layers], batch_size, length)
