"""Rotary position embedding on interleaved pairs (2i, 2i+1) of the head dim, computed in fp32."""

from __future__ import annotations

import math

import torch


def rope_frequencies(head_dim: int, max_period: float, device: torch.device | None = None) -> torch.Tensor:
    """[head_dim // 2] angular frequencies max_period^(-2i / head_dim), fp32."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dim, got {head_dim}")
    i = torch.arange(head_dim // 2, device=device, dtype=torch.float32)
    return torch.exp(i * (-2.0 * math.log(max_period) / head_dim))


def apply_rope(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, H, Dh] (or [B, T, ..., Dh]: e.g. queries and keys together, [B, T, 2, H, Dh]) by absolute
    positions [B, T] (long); returns x's dtype.

    Each pair (x[2i], x[2i+1]) is a complex number rotated by angle positions * freqs[i].
    """
    # [B, T, 1, ..., 1] * [Dh/2] -> [B, T, 1, ..., Dh/2], broadcast over the dims between T and Dh
    angles = positions.to(torch.float32).reshape(*positions.shape, *([1] * (x.dim() - 2))) * freqs
    cos, sin = torch.cos(angles), torch.sin(angles)
    pairs = x.float().unflatten(-1, (-1, 2))
    re, im = pairs[..., 0], pairs[..., 1]
    out = torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)
