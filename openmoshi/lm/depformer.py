"""The depth transformer: generates one time step's audio codebooks, one codebook per depth step.

Depth step k (0 <= k < S = dep_q) gets in_proj[k](h) + (text_emb(text token) if k == 0 else
audio_emb[k-1](codebook k-1)), where h [B, D] is the temporal transformer's normalised output for this time step;
its output goes through heads[k] -> logits over the `card` audio codes. Every step has its own attention, gating,
input projection and head weights (stacked along a leading [S] dim); norms are shared; no positional embedding;
a fresh S-long sequence per time step.

Parameters: `in_proj.weight` [S, Dd, D], `text_emb.weight` [text_card + 1, Dd], `audio_emb.weight`
[S - 1, card + 1, Dd], `transformer.*` (nn.Transformer with num_steps = S), `heads.weight` [S, card, Dd].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..nn.attention import KVBuffer
from ..nn.init import init_weights
from ..nn.linear import StepLinear
from ..nn.transformer import Transformer, TransformerConfig
from .config import LMConfig
from .embeddings import Embedding, StackedEmbedding


class DepthTransformer(nn.Module):
    def __init__(self, cfg: LMConfig, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        S, Dd = cfg.dep_q, cfg.depformer_dim
        self.num_steps = S
        self.in_proj = StepLinear(cfg.dim, Dd, S, **kw)
        self.text_emb = Embedding(cfg.text_card + 1, Dd, **kw)
        self.audio_emb = StackedEmbedding(S - 1, cfg.card + 1, Dd, **kw)
        self.transformer = Transformer(
            TransformerConfig(
                d_model=Dd, num_heads=cfg.depformer_num_heads, num_layers=cfg.depformer_num_layers,
                dim_feedforward=cfg.depformer_hidden, causal=True, context=None, rope_max_period=None,
                norm="rms_norm", norm_eps=cfg.norm_eps, layer_scale=None, gating="silu", num_steps=S,
            ),
            **kw,
        )
        self.heads = StepLinear(Dd, cfg.card, S, **kw)

    def init_weights(self) -> None:
        """(Re)initialise every parameter in place (after `to_empty` from the meta device)."""
        init_weights(self)

    def forward(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The training pass, teacher-forced logits: h [B, T, D], tokens [B, S, T] (text, then codebooks
        0..S-2 fed to steps 1..S-1; the last codebook is never an input) -> logits [B, S, T, card]."""
        B, T, D = h.shape
        S = self.num_steps
        x = h.reshape(B * T, 1, D).expand(B * T, S, D)
        x = self.in_proj(x)  # [B*T, S, Dd], step k uses in_proj[k]
        tok = tokens.permute(0, 2, 1).reshape(B * T, S)
        emb = [self.text_emb(tok[:, :1])]
        if S > 1:
            emb.append(self.audio_emb(tok[:, 1:]))
        x = x + torch.cat(emb, dim=1)
        y = self.heads(self.transformer(x))  # [B*T, S, card]
        return y.view(B, T, S, -1).permute(0, 2, 1, 3)

    def new_cache(self, batch_size: int) -> list[KVBuffer]:
        """Key/value buffers of one time step's depth sequence ([2, B, H, S, Dh] per layer), allocated once."""
        return self.transformer.new_kv(batch_size, self.num_steps)

    def generate(
        self,
        h: torch.Tensor,
        text_token: torch.Tensor,
        sample_fn: Callable[[torch.Tensor], torch.Tensor],
        cache: list[KVBuffer] | None = None,
        logits_out: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One time step's codebooks: h [B, D], text_token [B] -> tokens [B, S].

        `sample_fn` maps logits [B, card] to tokens [B]; `cache` from `new_cache(B)` (reused across calls);
        `logits_out`, when given, receives each step's logits [B, card] (differentiable outside no_grad).
        The same modules as `forward`, one depth step at a time: step k runs `transformer(x, k, cache)`, which
        attends to steps 0..k of this time step (their keys/values in `cache`), then `heads` at step k.
        """
        B, D = h.shape
        S = self.num_steps
        if cache is None:
            cache = self.new_cache(B)
        # All S input projections of h in one call: step k of [B, S, D] uses in_proj[k].
        proj = self.in_proj(h[:, None].expand(B, S, D))  # [B, S, Dd]
        prev = self.text_emb(text_token)[:, None]  # [B, 1, Dd]
        out = []
        for k in range(S):
            x = self.transformer(proj[:, k:k + 1] + prev, k, cache)
            logits = self.heads(x, k)[:, 0]
            if logits_out is not None:
                logits_out.append(logits)
            token = sample_fn(logits)
            out.append(token)
            if k + 1 < S:
                prev = self.audio_emb.lookup(token[:, None], k)
        return torch.stack(out, dim=1)
