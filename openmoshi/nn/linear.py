"""Linear layers without bias, optionally with one weight per step (the depth transformer's per-codebook weights)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class StepLinear(nn.Module):
    """A bias-free linear with `num_steps` weights stacked in `weight` [S, out, in].

    Position t of an input that starts at step `step` uses `weight[step + t]`: x [B, T, in] -> [B, T, out].
    """

    def __init__(self, in_features: int, out_features: int, num_steps: int, device=None, dtype=None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.num_steps = in_features, out_features, num_steps
        self.weight = nn.Parameter(torch.empty(num_steps, out_features, in_features, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in +-1/sqrt(in), each step's matrix like a default nn.Linear's."""
        bound = 1 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, step: int = 0) -> torch.Tensor:
        T = x.shape[1]
        if step + T > self.num_steps:
            raise ValueError(f"steps {step}..{step + T - 1} exceed the {self.num_steps} per-step weights")
        if T == 1:
            return F.linear(x, self.weight[step])
        # [B, T, in] x [T, out, in] -> [B, T, out], one matmul per step batched over B.
        return torch.bmm(x.transpose(0, 1), self.weight[step:step + T].transpose(1, 2)).transpose(0, 1)


def make_linear(in_features: int, out_features: int, num_steps: int = 0, device=None, dtype=None) -> nn.Module:
    """nn.Linear(bias=False) for shared weights, StepLinear when `num_steps` > 0."""
    if num_steps:
        return StepLinear(in_features, out_features, num_steps, device=device, dtype=dtype)
    return nn.Linear(in_features, out_features, bias=False, device=device, dtype=dtype)


def apply_linear(layer: nn.Module, x: torch.Tensor, step: int) -> torch.Tensor:
    return layer(x, step) if isinstance(layer, StepLinear) else layer(x)
