"""The LM's training step pieces: the model's training config, batch augmentation, the loss, accuracies.

- `training_lm_config(cfg, acoustic_delay)`: the model's LMConfig with the acoustic delay the run asks for
  (text and the semantic codebooks of both sides stay at 0).
- `augment(codes, ...)`: text masking (a sequence's text stream removed with probability `text_mask_prob`:
  -1 = no input, no target; not in text-only batches). Draws are seeded by (run seed, step, global micro-batch
  index), so they do not depend on how the global batch is split over ranks. (Text-only batches come from the
  data: the loader's `text_only_share`.)
- `lm_train_loss(model, codes, loss)`: FACTS.md's loss through `lm.loss.lm_loss`: CE(text) + weighted audio CE.
- `lm_accuracy(output, codes, scored)`: top-1 accuracy of the text stream, the semantic and the acoustic
  codebooks over the positions that have a target.
- `lm_param_groups(optim)`: AdamW groups: the depth transformer (`depformer.*`) at `depth_lr`, the rest at `lr`.
"""

from __future__ import annotations

import random

import torch

from ..lm.config import LMConfig
from ..lm.loss import LMLoss, LossConfig, lm_loss
from ..lm.model import LMModel, LMOutput
from .lm_config import LMLossSection, LMOptimConfig


def training_lm_config(cfg: LMConfig, acoustic_delay: int | None) -> LMConfig:
    """`cfg` with every acoustic codebook delayed `acoustic_delay` steps (None: unchanged)."""
    if acoustic_delay is None:
        return cfg
    side = max(1, cfg.n_q // 2)  # each side's codebook 0 is semantic
    delays = [0] + [0 if k % side == 0 else acoustic_delay for k in range(cfg.n_q)]
    return cfg.replace(delays=tuple(delays))


def scored_codebooks(cfg: LMConfig, which: str) -> tuple[int, ...] | None:
    """Indices of the generated codebooks the loss scores: Moshi's own (the first n_q / 2) or all dep_q."""
    if which == "all":
        return None
    return tuple(range(min(cfg.dep_q, max(1, cfg.n_q // 2))))


def loss_config(cfg: LMConfig, loss: LMLossSection) -> LossConfig:
    return LossConfig.for_model(cfg, semantic_weight=loss.semantic_weight, acoustic_weight=loss.acoustic_weight,
                                text_padding_weight=loss.text_padding_weight,
                                audio_codebooks=scored_codebooks(cfg, loss.codebooks))


def is_text_only_step(seed: int, step: int, share: float) -> bool:
    """Whether global step `step` is a text-only batch (the same answer on every rank)."""
    return share > 0 and random.Random(f"text-only:{seed}:{step}").random() < share


def augment(codes: torch.Tensor, loss: LMLossSection, seed: int, step: int, micro_index: int,
            text_only: bool = False) -> torch.Tensor:
    """codes [B, K, T] -> a copy with text masking applied (see the module docstring)."""
    if loss.text_mask_prob <= 0 or text_only:
        return codes
    codes = codes.clone()
    gen = torch.Generator().manual_seed(hash((seed, step, micro_index)) & 0x7FFF_FFFF_FFFF)
    drop = torch.rand(codes.shape[0], generator=gen) < loss.text_mask_prob
    codes[drop.to(codes.device), 0] = -1
    return codes


def lm_train_loss(model: torch.nn.Module, codes: torch.Tensor, config: LossConfig) -> tuple[LMLoss, LMOutput]:
    """The loss of `model(codes)`. Scoring every codebook of a model that also predicts the user (dep_q = n_q,
    `audio_codebooks` None) gives BOTH sides' semantic codebooks the semantic weight (see `both_sides_loss`)."""
    out = model(codes)
    cfg = getattr(model, "cfg", None)
    if config.audio_codebooks is None and cfg is not None and cfg.dep_q == cfg.n_q and cfg.n_q >= 2:
        return both_sides_loss(out, codes, config, cfg.n_q // 2), out
    return lm_loss(out, codes, config), out


def _audio_weight(mask: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """sum of a_k over the valid positions of one side's codebooks (mask [B, S, T], codebook 0 semantic)."""
    return config.semantic_weight * mask[:, 0].sum() + config.acoustic_weight * mask[:, 1:].sum()


def both_sides_loss(out: LMOutput, codes: torch.Tensor, config: LossConfig, side: int) -> LMLoss:
    """FACTS.md's loss over both sides' codebooks (Moshi's 0..side-1, the user's side..2*side-1), each side's
    first codebook semantic: CE(text) + (sum_k a_k CE_k) / (sum_k a_k) over all of them. `lm_loss` per side
    (each its weighted mean), recombined with the sides' weight sums into the one weighted mean."""
    moshi = lm_loss(LMOutput(out.text_logits, out.text_mask, out.audio_logits[:, :side], out.audio_mask[:, :side]),
                    codes[:, :side + 1], config)
    user_codes = torch.cat([codes[:, :1], codes[:, side + 1:2 * side + 1]], dim=1)
    user = lm_loss(LMOutput(out.text_logits, torch.zeros_like(out.text_mask), out.audio_logits[:, side:],
                            out.audio_mask[:, side:]), user_codes, config)
    w_m, w_u = _audio_weight(out.audio_mask[:, :side], config), _audio_weight(out.audio_mask[:, side:], config)
    audio = (moshi.audio * w_m + user.audio * w_u) / (w_m + w_u).clamp_min(1e-12)
    return LMLoss(moshi.text + audio, moshi.text, audio)


@torch.no_grad()
def lm_accuracy(out: LMOutput, codes: torch.Tensor, scored: tuple[int, ...] | None,
                side: int | None = None) -> dict[str, tuple[int, int]]:
    """(correct, counted) for "text", "semantic" and "acoustic" over positions with a target. `side`: codebooks
    per side (the first of each side is semantic); None = only codebook 0 is."""
    codes = codes.to(out.text_logits.device)
    result: dict[str, tuple[int, int]] = {}
    hit = (out.text_logits.argmax(-1) == codes[:, :1]) & out.text_mask
    result["text"] = (int(hit.sum()), int(out.text_mask.sum()))
    dep_q = out.audio_logits.shape[1]
    ks = list(range(dep_q)) if scored is None else list(scored)
    pred = out.audio_logits.argmax(-1)
    target = codes[:, 1:dep_q + 1]
    sem = [k for k in ks if (k % side == 0 if side else k == 0)]
    aco = [k for k in ks if k not in sem]
    for name, idx in (("semantic", sem), ("acoustic", aco)):
        if not idx:
            continue
        mask = out.audio_mask[:, idx]
        ok = (pred[:, idx] == target[:, idx]) & mask
        result[name] = (int(ok.sum()), int(mask.sum()))
    return result


def lm_param_groups(optim: LMOptimConfig) -> dict:
    return {"depth": (optim.depth_lr, lambda n: n.startswith("depformer.")),
            "temporal": (optim.lr, lambda n: True)}


def count_parameters(model: LMModel) -> tuple[int, int]:
    """(all, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
