"""One codec training step: the generator (Mimi) update, then the discriminator update; losses as floats.

`codec_step(parts, optims, batch, cfg)` is all a training loop calls per step:
1. Mimi's training pass on batch.wav [B, 1, T] (quantizer dropout and EMA codebooks as set on
   `mimi.quantizer.training_options`, the unquantized latent decoded for `cfg.unquantized_share` of the rows).
2. Generator losses on the reconstruction (`cfg.reconstruction`): multi-scale mel, waveform L1, hinge
   adversarial and feature matching (the discriminator frozen), through the `Balancer` when one is given (each
   weight a share of the gradient at the reconstruction), else a plain weighted sum. The auxiliary losses
   (`cfg.auxiliary`): the commitment, and the semantic distillation (first VQ level's output vs batch.teacher
   features, when both a head and features are given), are added as they are.
3. Codec optimiser step (gradient clipping optional), weight EMA update.
4. Discriminator: hinge loss on the real audio vs the (detached) reconstruction, its own optimiser step.

A loss with weight 0 is not computed (no discriminator at all when adversarial and feature matching are 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from .balancer import Balancer
from .codec_export import ENCODER_MODULES
from .codec_losses import (
    MelLossConfig,
    MultiScaleMelLoss,
    SemanticDistillation,
    codebook_perplexity,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    waveform_l1,
)
from .ema import WeightEMA

RECONSTRUCTION_LOSSES = ("mel", "l1", "adversarial", "feature_matching")  # computed on the decoded audio


def _check_weight(key: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{key} must be a finite number >= 0, got {value}")


@dataclass
class ReconstructionWeights:
    """Weights (0 = off) of the losses computed on the decoded audio: they reach the codec through the
    reconstruction, which is where the balancer works. With the balancer on, only their ratios matter: each is
    that loss's share of the gradient at the reconstruction."""

    mel: float = 1.0  # multi-scale log-mel distance (scales: `CodecLossConfig.mel_scales`)
    l1: float = 0.0  # waveform L1
    adversarial: float = 3.0  # hinge generator loss against the discriminator
    feature_matching: float = 3.0  # distance of the discriminator's hidden features

    def __post_init__(self) -> None:
        weights = self.as_dict()
        for name, value in weights.items():
            _check_weight(f"loss.reconstruction.{name}", value)
        if sum(weights.values()) <= 0:
            raise ValueError("loss.reconstruction: at least one of mel, l1, adversarial, feature_matching must "
                             "have a weight > 0")

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in RECONSTRUCTION_LOSSES}

    @property
    def needs_discriminator(self) -> bool:
        return self.adversarial > 0 or self.feature_matching > 0


@dataclass
class BalancerConfig:
    """The gradient balancer over the reconstruction losses (`balancer.Balancer`); off: a plain weighted sum."""

    enabled: bool = True
    total_norm: float = 1.0  # norm of the combined gradient at the reconstruction
    ema_decay: float = 0.999  # smoothing of each loss's gradient norm across steps


@dataclass
class AuxiliaryWeights:
    """Weights (0 = off) of the losses that do not go through the reconstruction, added to the total as they
    are: the quantizer's commitment, and the distillation of the first codebook towards the teacher."""

    commitment: float = 1.0
    distillation: float = 1.0

    def __post_init__(self) -> None:
        _check_weight("loss.auxiliary.commitment", self.commitment)
        _check_weight("loss.auxiliary.distillation", self.distillation)


@dataclass
class CodecPhases:
    """When each part of the game switches on or off, in 0-based steps (a `step` of None: past every phase).

    - `adversarial_start`: the generator ignores the discriminator before it. An untrained discriminator's
      gradient is noise, and the balancer would hand it its full share all the same.
    - `discriminator_start` (None: step 0): the discriminator does not train, nor run, before it. On a CPU it
      costs more than a small codec, so it need not start long before the generator listens to it.
    - `encoder_frozen_from` (None: never): the decoder-only phase. The encoder side (encoder, its transformer,
      the downsampling, the quantizer and its codebooks) holds its weight average, set by the trainer, so the
      codes are final and a language model's data can be encoded, while the decoder keeps learning to decode
      every codebook: no quantizer dropout, no unquantized rows, no distillation (no teacher to run).
    """

    adversarial_start: int = 0
    discriminator_start: int | None = None
    encoder_frozen_from: int | None = None

    def __post_init__(self) -> None:
        if self.adversarial_start < 0:
            raise ValueError(f"loss.phases.adversarial_start must be >= 0, got {self.adversarial_start}")
        start = self.discriminator_start
        if start is not None and not 0 <= start <= self.adversarial_start:
            raise ValueError(f"loss.phases.discriminator_start must lie between 0 and loss.phases.adversarial_start "
                             f"({self.adversarial_start}), got {start}")
        if self.encoder_frozen_from is not None and self.encoder_frozen_from < 0:
            raise ValueError(f"loss.phases.encoder_frozen_from must be >= 0, got {self.encoder_frozen_from}")

    def generator_listens(self, step: int | None) -> bool:
        """Whether the generator's losses at `step` include the discriminator's."""
        return step is None or step >= self.adversarial_start

    def discriminator_trains(self, step: int | None) -> bool:
        return step is None or step >= (self.discriminator_start or 0)

    def encoder_frozen(self, step: int | None) -> bool:
        """Whether `step` trains the decoder side only."""
        return self.encoder_frozen_from is not None and (step is None or step >= self.encoder_frozen_from)


@dataclass
class CodecLossConfig:
    """The `loss` section of the codec trainer: what the step optimises, and how."""

    reconstruction: ReconstructionWeights = field(default_factory=ReconstructionWeights)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    auxiliary: AuxiliaryWeights = field(default_factory=AuxiliaryWeights)
    phases: CodecPhases = field(default_factory=CodecPhases)
    mel_scales: MelLossConfig = field(default_factory=MelLossConfig)
    unquantized_share: float = 0.5  # share of the rows decoded from the unquantized latent (Mimi: 50%)
    grad_clip: float = 0.0  # max gradient norm of each optimiser's parameters; 0 = no clipping

    # Keys of the flat layout this section had before (old key -> its new place): a config that still uses one
    # is refused with a message naming the new key (`config.py`), not read.
    MOVED_KEYS: ClassVar[dict[str, str]] = {
        **{name: f"reconstruction.{name}" for name in RECONSTRUCTION_LOSSES},
        "balancer": "balancer.enabled",
        "balancer_total_norm": "balancer.total_norm",
        "balancer_ema_decay": "balancer.ema_decay",
        "commitment": "auxiliary.commitment",
        "distillation": "auxiliary.distillation",
        "adversarial_start": "phases.adversarial_start",
        "discriminator_start": "phases.discriminator_start",
        "encoder_frozen_from": "phases.encoder_frozen_from",
    }

    def __post_init__(self) -> None:
        _check_weight("loss.grad_clip", self.grad_clip)
        if not 0 <= self.unquantized_share <= 1:
            raise ValueError(f"loss.unquantized_share must be in [0, 1], got {self.unquantized_share}")

    @property
    def uses_discriminator(self) -> bool:
        return self.reconstruction.needs_discriminator


@dataclass
class CodecParts:
    """What the step trains. Build with `codec_parts`."""

    mimi: nn.Module
    mel_loss: MultiScaleMelLoss
    discriminator: nn.Module | None = None  # a MultiScaleSTFTDiscriminator
    distillation: SemanticDistillation | None = None  # the projection head to the teacher's width
    balancer: Balancer | None = None
    ema: WeightEMA | None = None  # of the Mimi weights (what gets exported)


@dataclass
class CodecOptimizers:
    codec: torch.optim.Optimizer  # Mimi and the distillation head
    discriminator: torch.optim.Optimizer | None = None


@dataclass
class CodecBatch:
    wav: Tensor  # [B, 1, T] at the codec's sample rate
    teacher: Tensor | None = None  # [B, F_t, C] teacher features of the same audio (any frame rate)


def codec_parts(mimi: nn.Module, cfg: CodecLossConfig, discriminator: nn.Module | None = None,
                teacher_dim: int | None = None, ema_decay: float | None = 0.99) -> CodecParts:
    """Assemble the loss modules for `cfg`: the mel loss, the balancer, the distillation head (teacher_dim given
    and a distillation weight > 0), the weight EMA (ema_decay not None). The discriminator is the caller's."""
    if cfg.uses_discriminator and discriminator is None:
        raise ValueError("adversarial / feature-matching losses need a discriminator (or set their weights to 0)")
    device = next(mimi.parameters()).device
    head = None
    if teacher_dim and cfg.auxiliary.distillation > 0:
        head = SemanticDistillation(mimi.cfg.quantizer.dimension, teacher_dim).to(device)
    balancer = None
    if cfg.balancer.enabled:
        active = {name: w for name, w in cfg.reconstruction.as_dict().items() if w > 0}
        balancer = Balancer(active, cfg.balancer.total_norm, cfg.balancer.ema_decay)
    return CodecParts(mimi, MultiScaleMelLoss(mimi.cfg.sample_rate, cfg.mel_scales).to(device),
                      discriminator if cfg.uses_discriminator else None, head, balancer,
                      WeightEMA(mimi, ema_decay) if ema_decay is not None else None)


def codec_optimizers(parts: CodecParts, lr: float = 8e-4, betas: tuple[float, float] = (0.5, 0.9),
                     weight_decay: float = 0.0, discriminator_lr: float | None = None) -> CodecOptimizers:
    """Separate AdamW optimisers for the codec (+ distillation head) and the discriminator (Mimi: 8e-4, (0.5, 0.9))."""
    params = list(parts.mimi.parameters())
    if parts.distillation is not None:
        params += list(parts.distillation.parameters())
    # `base_lr`: the schedule (train/optim.py `set_lr`) scales each group's base learning rate.
    codec = torch.optim.AdamW([{"params": params, "base_lr": lr}], lr=lr, betas=betas, weight_decay=weight_decay)
    disc = None
    if parts.discriminator is not None:
        d_lr = discriminator_lr or lr
        disc = torch.optim.AdamW([{"params": list(parts.discriminator.parameters()), "base_lr": d_lr}], lr=d_lr,
                                 betas=betas, weight_decay=weight_decay)
    return CodecOptimizers(codec, disc)


def _clip(params, max_norm: float) -> float:
    if max_norm <= 0:
        return float("nan")
    norm = torch.nn.utils.clip_grad_norm_(list(params), max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # sharded (FSDP2) grads


def codec_step(parts: CodecParts, optims: CodecOptimizers, batch: CodecBatch, cfg: CodecLossConfig,
               step: int | None = None) -> dict[str, float]:
    """One generator + discriminator update. Returns floats: each loss computed, `generator` (the weighted sum
    of the generator's losses, as reported, not as balanced), `discriminator`, `perplexity` (mean over levels of
    the codes' perplexity in the batch), `dead_codes` (entries below the dead-code threshold, all levels).
    `step` (0-based; None: past any warm-up) places the step in `cfg.phases`: whether the generator listens to
    the discriminator, whether the discriminator trains (no discriminator work at all before it), whether only
    the decoder side trains."""
    mimi, wav = parts.mimi, batch.wav
    if wav.dim() != 3 or wav.shape[1] != 1:
        raise ValueError(f"batch.wav must be [B, 1, T], got {tuple(wav.shape)}")
    phases, weights = cfg.phases, cfg.reconstruction.as_dict()
    frozen = phases.encoder_frozen(step)
    mimi.train()
    if frozen:  # eval() mode: no codebook updates, no quantizer dropout (the weights are frozen by the trainer)
        for module in encoder_side(mimi):
            module.eval()
    disc = parts.discriminator
    if disc is not None:
        disc.train()
        disc.requires_grad_(False)  # the generator's pass does not train the discriminator
    optims.codec.zero_grad(set_to_none=True)
    out = mimi(wav, unquantized_share=0.0 if frozen else cfg.unquantized_share)
    recon = out.reconstruction[..., :wav.shape[-1]]
    losses: dict[str, Tensor] = {}
    if weights["mel"] > 0:
        losses["mel"] = parts.mel_loss(recon, wav)
    if weights["l1"] > 0:
        losses["l1"] = waveform_l1(recon, wav)
    if disc is not None and phases.generator_listens(step):
        fake = disc(recon)
        if weights["adversarial"] > 0:
            losses["adversarial"] = hinge_generator_loss(fake.logits)
        if weights["feature_matching"] > 0:
            with torch.no_grad():
                real = disc(wav)
            losses["feature_matching"] = feature_matching_loss(real.features, fake.features)
    plain = {} if frozen else {"commitment": out.commitment_loss * cfg.auxiliary.commitment}
    if not frozen and parts.distillation is not None and batch.teacher is not None and out.semantic is not None:
        losses["distillation"] = parts.distillation(out.semantic, batch.teacher)
        plain["distillation"] = losses["distillation"] * cfg.auxiliary.distillation
    losses["commitment"] = out.commitment_loss
    extra = sum(plain.values()) if plain else None
    on_recon = {k: losses[k] for k in RECONSTRUCTION_LOSSES if k in losses}
    if parts.balancer is not None:
        parts.balancer.backward(on_recon, recon, extra)
    else:
        (sum(v * weights[k] for k, v in on_recon.items()) + (0 if extra is None else extra)).backward()
    if disc is not None:
        disc.requires_grad_(True)
    grad_norm = _clip(optims.codec.param_groups[0]["params"], cfg.grad_clip)
    optims.codec.step()
    if parts.ema is not None:
        parts.ema.update(mimi)
    metrics = {k: float(v.detach()) for k, v in losses.items()}
    metrics["generator"] = float(sum(v.detach() * weights[k] for k, v in on_recon.items())
                                 + (0.0 if extra is None else extra.detach()))
    if cfg.grad_clip > 0:
        metrics["grad_norm"] = grad_norm
    if disc is not None and optims.discriminator is not None and phases.discriminator_trains(step):
        optims.discriminator.zero_grad(set_to_none=True)
        d_loss = hinge_discriminator_loss(disc(wav).logits, disc(recon.detach()).logits)
        d_loss.backward()
        _clip(disc.parameters(), cfg.grad_clip)
        optims.discriminator.step()
        metrics["discriminator"] = float(d_loss.detach())
    metrics.update(codebook_metrics(mimi, out.codes))
    return metrics


def encoder_side(mimi: nn.Module) -> list[nn.Module]:
    """The modules that make the codes: what `loss.phases.encoder_frozen_from` freezes (the quantizer holds the
    codebooks, which the decoder side reads too, so they stay as they are)."""
    return [getattr(mimi, name) for name in ENCODER_MODULES]


@torch.no_grad()
def codebook_metrics(mimi: nn.Module, codes: Tensor) -> dict[str, float]:
    """`perplexity`: mean over levels of the batch codes' perplexity; `dead_codes`: entries (all levels) whose EMA
    usage is below the dead-code threshold for this batch size (only with EMA codebooks enabled)."""
    q = mimi.quantizer
    out = {"perplexity": float(codebook_perplexity(codes, q.cfg.codebook_size).mean())}
    opts = q.training_options
    if opts is not None and opts.ema_decay is not None:
        n = codes.shape[0] * codes.shape[2]
        books = [*q.semantic.codebooks, *q.acoustic.codebooks][:codes.shape[1]]
        out["dead_codes"] = float(sum(cb.dead_codes(n, opts.dead_code_ratio) for cb in books))
    return out
