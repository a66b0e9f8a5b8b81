"""Token sampling for batched logits [B, V]: greedy, temperature, top-k, top-p, without host syncs.

A draw is softmax(logits / temperature) restricted to the top-k (then top-p) candidates, sampled by dividing
the probabilities by Exp(1) noise and taking the argmax
(an exact categorical draw with no device-to-host sync).
The noise comes from a caller-owned `torch.Generator`, so a seeded generator gives reproducible tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingConfig:
    """How one stream is sampled.

    `greedy` (or temperature 0) takes the argmax; top_k 0 / top_p 0 disable them.
    """

    temperature: float = 0.8
    top_k: int = 250
    top_p: float = 0.0
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0.0

    @classmethod
    def audio_default(cls) -> SamplingConfig:
        return cls(temperature=0.8, top_k=250)

    @classmethod
    def text_default(cls) -> SamplingConfig:
        return cls(temperature=0.7, top_k=25)


def sample(
    logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one token per row: logits [B, V] -> [B] long (on the logits' device)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got shape {list(logits.shape)}")
    if cfg.is_greedy:
        return logits.argmax(dim=-1)
    scaled = logits.float() / cfg.temperature
    indices = None
    if 0 < cfg.top_k < scaled.shape[-1]:
        scaled, indices = scaled.topk(cfg.top_k, dim=-1)  # sorted, descending
    probs = torch.softmax(scaled, dim=-1)
    if cfg.top_p > 0.0:
        if indices is None:
            probs, indices = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first candidate always stays).
        before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(before > cfg.top_p, 0.0)
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    choice = (probs / noise).argmax(dim=-1)
    if indices is None:
        return choice
    return indices.gather(-1, choice[:, None])[:, 0]
