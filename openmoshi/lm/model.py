"""The Moshi language model: Helium (the temporal transformer) and the depth transformer.

Streams: K = n_q + 1 token streams per 80 ms step, stream 0 text, then n_q audio codebooks (Moshi's dep_q first,
then the user's). Per time step the temporal transformer reads the sum of the audio embeddings and the text
embedding (id -1 = zero token, contributes nothing; ids card / text_card = initial tokens) and outputs h
(after `out_norm`) and the text logits; the depth transformer then generates the dep_q audio codebooks.

Parameters: `audio_emb.weight` [n_q, card + 1, D], `text_emb.weight` [text_card + 1, D], `transformer.*`,
`out_norm.weight` [D], `text_linear.weight` [text_card, D], `depformer.*` (see depformer.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..nn.attention import KVBuffer
from ..nn.init import init_weights
from ..nn.norms import RMSNorm
from ..nn.transformer import Transformer, TransformerConfig
from .config import LMConfig
from .delays import delay_codes, undelay
from .depformer import DepthTransformer
from .embeddings import Embedding, StackedEmbedding


@dataclass
class LMOutput:
    """Teacher-forced outputs aligned with the input codes (no extra shift needed for a loss).

    text_logits [B, 1, T, text_card], text_mask [B, 1, T]; audio_logits [B, dep_q, T, card],
    audio_mask [B, dep_q, T]. Masked positions (no valid target) hold 0 logits (never NaN, so a loss that
    multiplies by the mask stays finite; `lm.loss` selects the valid positions anyway).
    hidden [B, T, D]: the temporal transformer's output (after out_norm) that made the text logits, on the
    delayed grid of the text stream (the same grid when its delay is 0): position t has read the inputs of
    steps < t. Training-only heads (the trainer's user-transcript loss) read it.
    """

    text_logits: torch.Tensor
    text_mask: torch.Tensor
    audio_logits: torch.Tensor
    audio_mask: torch.Tensor
    hidden: torch.Tensor | None = None


class LMModel(nn.Module):
    def __init__(self, cfg: LMConfig, device=None, dtype=None) -> None:
        super().__init__()
        self.cfg = cfg
        kw = {"device": device, "dtype": dtype}
        self.audio_emb = StackedEmbedding(cfg.n_q, cfg.card + 1, cfg.dim, **kw)
        self.text_emb = Embedding(cfg.text_card + 1, cfg.dim, **kw)
        self.transformer = Transformer(self.temporal_config(cfg), **kw)
        self.out_norm = RMSNorm(cfg.dim, cfg.norm_eps, **kw)
        self.text_linear = nn.Linear(cfg.dim, cfg.text_card, bias=False, **kw)
        self.depformer = DepthTransformer(cfg, **kw)

    def init_weights(self) -> None:
        """(Re)initialise every parameter in place (after `to_empty` of a model built on the meta device):
        embeddings N(0, 1/D), linears uniform in +-1/sqrt(fan_in), norms 1."""
        init_weights(self)

    @staticmethod
    def temporal_config(cfg: LMConfig) -> TransformerConfig:
        return TransformerConfig(
            d_model=cfg.dim, num_heads=cfg.num_heads, num_layers=cfg.num_layers, dim_feedforward=cfg.hidden,
            causal=True, context=cfg.context, rope_max_period=cfg.max_period, norm="rms_norm",
            norm_eps=cfg.norm_eps, layer_scale=None, gating="silu",
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.text_emb.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.text_emb.weight.device

    def initial_tokens(self) -> torch.Tensor:
        """[K] long: the initial token of every stream (text_card for text, card for audio)."""
        cfg = self.cfg
        init = torch.full((cfg.num_streams,), cfg.card, dtype=torch.long, device=self.device)
        init[0] = cfg.text_card
        return init

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, K, T] (no -2) -> transformer input [B, T, D]: sum of audio embeddings, then + text."""
        audio = self.audio_emb(tokens[:, 1:].transpose(1, 2), reduce=True)
        return audio + self.text_emb(tokens[:, 0])

    def forward_temporal(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, K, T] -> (h [B, T, D] after out_norm, text logits [B, T, text_card]).

        Under `streaming(model.transformer, B)` this continues each row's stream (KV cache).
        """
        h = self.out_norm(self.transformer(self.embed(tokens)))
        return h, self.text_linear(h)

    def frame_step(
        self,
        tokens: torch.Tensor,
        sample_text: Callable[[torch.Tensor], torch.Tensor],
        sample_audio: Callable[[torch.Tensor], torch.Tensor],
        depth_cache: list[KVBuffer],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One 80 ms generation step: tokens [B, K, 1] (under `streaming(model.transformer, B)`) ->
        (text [B], audio [B, dep_q]). The temporal step, text sampling, then the depth transformer's codebooks.

        `depth_cache` from `depformer.new_cache(B)`. With `set_static_shapes(model, True)` this function has
        no data-dependent shapes and no host values: `torch.compile` compiles it once.
        """
        h, text_logits = self.forward_temporal(tokens)
        text = sample_text(text_logits[:, 0])
        return text, self.depformer.generate(h[:, 0], text, sample_audio, depth_cache)

    def forward(self, codes: torch.Tensor) -> LMOutput:
        """The training pass, teacher-forced: codes [B, K, T] on the input grid (-1 allowed: no input, no target).

        Streams are delayed (initial tokens in front), one all-initial step is prepended and the last dropped;
        the logits at delayed position t predict the delayed tokens at t and are undelayed back onto the input
        grid. Positions without a target (past the end after undelaying, or a -1 code) are masked, their logits 0.
        """
        cfg = self.cfg
        B, K, T = codes.shape
        if K != cfg.num_streams:
            raise ValueError(f"codes must have {cfg.num_streams} streams, got shape {list(codes.shape)}")
        initial = self.initial_tokens()
        delayed = delay_codes(codes, cfg.delays, initial)
        inputs = torch.cat([initial.view(1, K, 1).expand(B, K, 1), delayed[:, :, :-1]], dim=2)
        h, text_logits = self.forward_temporal(inputs)
        audio_logits = self.depformer(h, delayed[:, : cfg.dep_q])
        text_logits, text_mask = undelay(text_logits[:, None], cfg.delays[:1], fill_value=0.0)
        audio_logits, audio_mask = undelay(audio_logits, cfg.delays[1 : cfg.dep_q + 1], fill_value=0.0)
        text_mask &= codes[:, :1] != -1
        audio_mask &= codes[:, 1 : cfg.dep_q + 1] != -1
        text_logits = text_logits.masked_fill(~text_mask[..., None], 0.0)
        audio_logits = audio_logits.masked_fill(~audio_mask[..., None], 0.0)
        return LMOutput(text_logits, text_mask, audio_logits, audio_mask, h)
