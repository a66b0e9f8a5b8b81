"""Normalisations and LayerScale, layout [..., D]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.Module):
    """LayerNorm with weight and bias over the last dim (params `weight`, `bias` [D])."""

    def __init__(self, dim: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """y = x * weight * rsqrt(mean(x^2) + eps), computed in fp32 and cast back (param `weight` [D]).

    fp32 matters in bf16 mode: the mean of squares of a 4096-wide activation loses precision in bf16.
    """

    def __init__(self, dim: int, eps: float = 1e-8, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused op (fewer kernel launches than the written-out maths, which matters in the depth steps).
        w = self.weight
        if x.dtype == torch.float32 and w.dtype == torch.float32:
            return torch.rms_norm(x, w.shape, w, self.eps)
        return torch.rms_norm(x.float(), w.shape, w.float(), self.eps).to(x.dtype)


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (param `scale` [D])."""

    def __init__(self, dim: int, init: float = 1e-4, device=None, dtype=None) -> None:
        super().__init__()
        self.init = init
        self.scale = nn.Parameter(torch.full((dim,), init, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.scale, self.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def make_norm(kind: str, dim: int, eps: float, device=None, dtype=None) -> nn.Module:
    if kind == "layer_norm":
        return LayerNorm(dim, eps, device=device, dtype=dtype)
    if kind == "rms_norm":
        return RMSNorm(dim, eps, device=device, dtype=dtype)
    raise ValueError(f"unknown norm {kind!r}: expected 'layer_norm' or 'rms_norm'")
