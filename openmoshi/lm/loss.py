"""Moshi's training loss: weighted cross-entropy of the text stream and of the audio codebooks.

loss = CE_text + (sum_k a_k CE_k) / (sum_k a_k)  (FACTS.md "Training constants"): text weighs as much as all
audio together; a_k = `semantic_weight` (100) for codebook 0 and `acoustic_weight` (1) for the others; text
targets that are PAD / EPAD weigh `text_padding_weight` (0.5). Each part is a weighted mean over the VALID
positions only (the `LMOutput` masks): sum(w * ce) / sum(w). With the same number of valid positions in every
scored codebook the audio part is exactly (sum_k a_k CE_k) / (sum_k a_k) with CE_k the mean over positions.

NaN-free whatever the masked logits hold: masked logits are replaced (torch.where, not a multiply by the mask)
before the cross-entropy and masked losses are selected away, so a NaN or inf there reaches neither the value
nor the gradient. A part with no valid position is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import LMConfig
from .model import LMOutput


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss. `audio_codebooks`: indices (0 = semantic) of the generated codebooks that are
    scored, None = all dep_q of them (fine-tuning scores Moshi's 8)."""

    semantic_weight: float = 100.0
    acoustic_weight: float = 1.0
    text_padding_weight: float = 0.5
    text_padding_ids: tuple[int, ...] = (3, 0)  # PAD, EPAD
    audio_codebooks: tuple[int, ...] | None = None

    @classmethod
    def for_model(cls, cfg: LMConfig, **overrides) -> LossConfig:
        """Defaults with the padding ids of `cfg` (PAD, EPAD)."""
        overrides.setdefault("text_padding_ids", (cfg.text_padding_id, cfg.text_end_padding_id))
        return cls(**overrides)


@dataclass
class LMLoss:
    """total = text + audio, each a scalar tensor (differentiable)."""

    total: torch.Tensor
    text: torch.Tensor
    audio: torch.Tensor


def weighted_ce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w * ce) / sum(w) over entries with w > 0: logits [..., V], targets [...], weights [...] (0 = ignored)."""
    valid = weights > 0
    safe_logits = torch.where(valid[..., None], logits, torch.zeros((), dtype=logits.dtype, device=logits.device))
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
    ce = F.cross_entropy(safe_logits.flatten(0, -2).float(), safe_targets.flatten(), reduction="none")
    ce = torch.where(valid.flatten(), ce, torch.zeros_like(ce))
    w = weights.flatten().to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp_min(torch.finfo(ce.dtype).tiny)


def lm_loss(output: LMOutput, codes: torch.Tensor, config: LossConfig | None = None) -> LMLoss:
    """The loss of `LMModel.forward(codes)`'s output against `codes` [B, K, T] (the same input grid).

    Text targets are stream 0, audio targets streams 1..dep_q (the depth transformer's codebooks).
    """
    config = config or LossConfig()
    B, dep_q, T, _ = output.audio_logits.shape
    if codes.dim() != 3 or codes.shape[0] != B or codes.shape[2] != T or codes.shape[1] < dep_q + 1:
        raise ValueError(f"codes must be [B={B}, K>={dep_q + 1}, T={T}], got shape {list(codes.shape)}")
    codes = codes.to(output.audio_logits.device)

    text_targets = codes[:, :1]
    is_pad = torch.zeros_like(output.text_mask)
    for pad_id in config.text_padding_ids:
        is_pad |= text_targets == pad_id
    text_w = torch.where(is_pad, config.text_padding_weight, 1.0) * output.text_mask
    text = weighted_ce(output.text_logits, text_targets, text_w)

    scored = list(range(dep_q)) if config.audio_codebooks is None else list(config.audio_codebooks)
    if not scored or any(not 0 <= k < dep_q for k in scored) or len(set(scored)) != len(scored):
        raise ValueError(f"audio_codebooks must be distinct indices in [0, {dep_q}), got {config.audio_codebooks}")
    a = torch.tensor([config.semantic_weight if k == 0 else config.acoustic_weight for k in scored],
                     device=codes.device)
    idx = torch.tensor(scored, device=codes.device)
    audio_w = a[None, :, None] * output.audio_mask[:, idx]
    audio = weighted_ce(output.audio_logits[:, idx], codes[:, 1:][:, idx], audio_w)
    return LMLoss(text + audio, text, audio)
