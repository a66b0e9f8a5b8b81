"""Token embeddings with Moshi's zero token: id -1 contributes exactly nothing (an all-zero vector).

`Embedding`: one table [V, D]. `StackedEmbedding`: N tables stacked in one parameter [N, V, D], looked up with a
single gather (one call for all 16 audio streams instead of 16), optionally summed over the tables.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ZERO_TOKEN_ID  # the one home of the token ids


class Embedding(nn.Module):
    """tokens [...] long -> [..., D]; `weight` [V, D]; -1 gives zeros."""

    def __init__(self, num_embeddings: int, dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.weight.shape[-1] ** -0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        valid = tokens != ZERO_TOKEN_ID
        out = F.embedding(tokens.clamp(min=0), self.weight)
        return torch.where(valid[..., None], out, out.new_zeros(()))


class StackedEmbedding(nn.Module):
    """N tables in `weight` [N, V, D]: tokens [..., N] (token n looked up in table n) -> [..., N, D].

    `forward(tokens, reduce=True)` sums over the N tables -> [..., D] (tables added in order 0..N-1).
    """

    def __init__(self, num_tables: int, num_embeddings: int, dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.num_tables, self.num_embeddings = num_tables, num_embeddings
        self.weight = nn.Parameter(torch.empty(num_tables, num_embeddings, dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.weight.shape[-1] ** -0.5)

    def lookup(self, tokens: torch.Tensor, table: int) -> torch.Tensor:
        """tokens [...] looked up in one table -> [..., D]."""
        valid = tokens != ZERO_TOKEN_ID
        out = F.embedding(tokens.clamp(min=0), self.weight[table])
        return torch.where(valid[..., None], out, out.new_zeros(()))

    def forward(self, tokens: torch.Tensor, reduce: bool = False) -> torch.Tensor:
        N, V, D = self.weight.shape
        if tokens.shape[-1] != N:
            raise ValueError(f"expected {N} token streams in the last dim, got shape {list(tokens.shape)}")
        valid = tokens != ZERO_TOKEN_ID
        offsets = torch.arange(N, device=tokens.device) * V
        out = F.embedding(tokens.clamp(min=0) + offsets, self.weight.view(N * V, D))
        out = torch.where(valid[..., None], out, out.new_zeros(()))
        return out.sum(dim=-2) if reduce else out
