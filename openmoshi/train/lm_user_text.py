"""The auxiliary user-transcript loss (training only): the temporal transformer learns to transcribe the user.

Moshi's text stream holds Moshi's words only. A small model trained on a few hours of dialogue is never made to
represent what the USER said, and without that no answer can depend on the question (the nano pilot learned
the timing and the phrases of its answers, not what was asked). This loss adds a linear head on the temporal
output h [B, T, D] (`LMOutput.hidden`) that predicts the user's words (`LMBatch.user_text`, laid on the frame
grid by the text-stream rule) `delay` frames late: the user's token at frame f is the target of position
f + delay (+ the text stream's own delay), so h has heard `delay` frames of the word (6 = 0.48 s) when asked.

The head belongs to the trainer (its own checkpoint entry and optimiser), never to `LMModel`, and is not
exported: the exported folder keeps Kyutai's layout. Target weights: PAD / EPAD weigh `padding_weight` (as in
Moshi's text loss), word pieces 1, positions without a target (-1) nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..lm.loss import weighted_ce
from ..lm.model import LMModel, LMOutput
from .lm_config import LMLossSection, LMOptimConfig
from .optim import build_adamw
from .parallelize import parallelize


class UserTranscriptHead(nn.Module):
    """h [B, T, D] -> logits [B, T, text_card] over the tokenizer's pieces (the user's words)."""

    def __init__(self, dim: int, text_card: int, device=None, dtype=None) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, text_card, bias=False, device=device, dtype=dtype)

    @torch.no_grad()
    def start_from(self, text_linear: nn.Linear) -> None:
        """Copy Moshi's text head: the same pieces, so it starts from the model's own reading of h."""
        self.linear.weight.copy_(text_linear.weight.detach().to(self.linear.weight))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)


def shifted_targets(user_text: torch.Tensor, shift: int) -> torch.Tensor:
    """user_text [B, T] -> [B, T] with row[t] = user_text[t - shift] (-1 where t < shift)."""
    if shift < 0:
        raise ValueError(f"the user-transcript shift must be >= 0, got {shift}")
    out = torch.full_like(user_text, -1)
    if shift < user_text.shape[1]:
        out[:, shift:] = user_text[:, :user_text.shape[1] - shift]
    return out


def user_transcript_loss(head: nn.Module, hidden: torch.Tensor, user_text: torch.Tensor, *, shift: int,
                         padding_ids: Sequence[int], padding_weight: float
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, correct, counted) of the head on hidden [B, T, D] against user_text [B, T] shifted by `shift`.

    loss: the weighted mean cross-entropy over positions with a target (0 when there is none); correct /
    counted: top-1 hits and targets among the word pieces (not PAD / EPAD, which fill most frames: a head
    that always says PAD scores 0 here), as tensors (no host sync here).
    """
    targets = shifted_targets(user_text.to(hidden.device), shift)
    valid = targets >= 0
    is_pad = torch.zeros_like(valid)
    for pad in padding_ids:
        is_pad |= targets == pad
    weights = torch.where(is_pad, padding_weight, 1.0) * valid
    logits = head(hidden)
    loss = weighted_ce(logits, targets, weights)
    with torch.no_grad():
        words = valid & ~is_pad
        correct = ((logits.argmax(-1) == targets) & words).sum()
    return loss, correct, words.sum()


@dataclass
class UserTranscriptTask:
    """The head, its optimiser and the loss's settings, as the trainer's loop uses them."""

    head: nn.Module
    optimizer: torch.optim.Optimizer
    weight: float
    shift: int  # loss.user_text_delay + the text stream's delay
    padding_ids: tuple[int, ...]
    padding_weight: float

    def __call__(self, out: LMOutput, user_text: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, correct, counted) of a batch (see `user_transcript_loss`)."""
        if user_text is None:
            raise ValueError("loss.user_text_weight > 0 needs the user's words with every batch: prepared data "
                             "of format 2 or later (prepare the manifest again), or the synthetic set")
        if out.hidden is None:
            raise ValueError("the model's output holds no hidden states for the user-transcript head")
        return user_transcript_loss(self.head, out.hidden, user_text, shift=self.shift,
                                    padding_ids=self.padding_ids, padding_weight=self.padding_weight)


def build_user_transcript(model: LMModel, loss: LMLossSection, optim: LMOptimConfig, mesh=None
                          ) -> UserTranscriptTask | None:
    """The task of `loss` (None when its weight is 0) for `model`, built BEFORE `model` is parallelized (the head
    starts as a copy of its text head); the head is sharded over `mesh` like the model."""
    if loss.user_text_weight <= 0:
        return None
    cfg = model.cfg
    head = UserTranscriptHead(cfg.dim, cfg.text_card, device=model.device)
    head.start_from(model.text_linear)
    parallelize(head, [], mesh=mesh)
    optimizer = build_adamw(head.named_parameters(), {"user_text": (optim.lr, lambda _n: True)}, optim)
    return UserTranscriptTask(head, optimizer, loss.user_text_weight, loss.user_text_delay + cfg.delays[0],
                              (cfg.text_padding_id, cfg.text_end_padding_id), loss.text_padding_weight)
