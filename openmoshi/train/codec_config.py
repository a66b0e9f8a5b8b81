"""The codec trainer's configuration (`CodecTrainConfig`) and its named presets (`CODEC_TRAIN_PRESETS`).

Sections (each a dataclass; YAML and `--set` go through the shared strict mechanism of `config.py`):
- `model`: the Mimi architecture (`preset` of MIMI_PRESETS plus MimiConfig field `overrides`, as config.json's
  "mimi" object), or `init`: a safetensors file (Kyutai's Mimi or an export of ours) to start from;
- `quantizer`: the training-only quantizer behaviours (`codec.quantizer.QuantizerTraining`);
- `loss`: what the step optimises (`codec_step.CodecLossConfig`): the `reconstruction` loss weights, the
  `balancer` over them, the `auxiliary` loss weights, the `phases` (the steps at which the discriminator and the
  decoder-only phase start), the `mel_scales`, `unquantized_share` and `grad_clip`;
- `discriminator`: the multi-scale STFT discriminator's size;
- `teacher`: "none" or "whisper-tiny.en" (`teachers.py`), computed on the fly from each batch;
- `weight_ema`: decay of the exported weight average (None: export the raw weights);
- `optim` (codec; `discriminator_lr` None = the same lr), `schedule`, `train` (the shared loop settings);
- `data`: crops and augmentation (`codec_data.CodecDataConfig`) plus the source, the held-out clips and how
  often their reconstructions are written.

Presets: `tiny` (the tiny Mimi; trains here in minutes), `nano` (nanomoshi's codec, docs/nanomoshi.md) and
`mimi` (the released size, FACTS.md "Training constants": AdamW 8e-4, betas (0.5, 0.9), weight EMA 0.99, 12 s
windows, quantizer dropout, the unquantized latent for 50% of the sequences).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..codec.quantizer import QuantizerTraining
from .codec_data import CodecDataConfig
from .codec_losses import MelLossConfig
from .codec_step import AuxiliaryWeights, BalancerConfig, CodecLossConfig, CodecPhases, ReconstructionWeights
from .config import LoopConfig, OptimConfig, ScheduleConfig
from .discriminators import DiscriminatorConfig


@dataclass
class CodecModelSection:
    """A new Mimi of `preset` with `overrides` (MimiConfig fields), or `init`: weights to start from (their
    architecture must be that of preset + overrides)."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    init: str | None = None


@dataclass
class CodecOptimConfig(OptimConfig):
    discriminator_lr: float | None = None  # None: optim.lr


@dataclass
class CodecDataSection(CodecDataConfig):
    """`source`: a folder of audio files or a JSONL manifest. `held_out`: a folder (or file) of clips kept out
    of training (default: the first files of `source`); `sample_every` steps their reconstructions are written
    to RUN/samples/ and their mel distance logged as the validation loss."""

    source: str | None = None
    held_out: str | None = None
    held_out_clips: int = 2
    held_out_seconds: float = 4.0


@dataclass
class CodecTrainConfig:
    model: CodecModelSection = field(default_factory=CodecModelSection)
    quantizer: QuantizerTraining = field(default_factory=QuantizerTraining)
    loss: CodecLossConfig = field(default_factory=CodecLossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    teacher: str = "none"
    weight_ema: float | None = 0.99
    optim: CodecOptimConfig = field(default_factory=CodecOptimConfig)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig("constant", warmup_steps=0))
    train: LoopConfig = field(default_factory=LoopConfig)
    data: CodecDataSection = field(default_factory=CodecDataSection)

    def __post_init__(self) -> None:
        from .teachers import TEACHERS

        t = self.train
        for name in ("steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if getattr(t, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(t, name)}")
        for name in ("val_every", "checkpoint_every"):
            if getattr(t, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(t, name)}")
        if t.grad_accum != 1:
            raise ValueError("train.grad_accum: the codec step has no gradient accumulation (use 1)")
        if t.precision != "fp32":  # accepted by the shared LoopConfig, but the codec step has no autocast path
            raise ValueError(f"train.precision={t.precision}: the codec trainer trains in fp32 only (use fp32)")
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher must be one of {', '.join(TEACHERS)}, got {self.teacher!r}")
        if self.weight_ema is not None and not 0 <= self.weight_ema < 1:
            raise ValueError(f"weight_ema must be in [0, 1) or null, got {self.weight_ema}")
        if self.optim.lr < 0 or self.optim.grad_clip < 0:
            raise ValueError("optim.lr and optim.grad_clip must be >= 0")
        if self.data.held_out_clips < 0 or self.data.held_out_seconds <= 0:
            raise ValueError("data.held_out_clips must be >= 0 and data.held_out_seconds > 0")


def tiny() -> CodecTrainConfig:
    return CodecTrainConfig(
        model=CodecModelSection("tiny"),
        quantizer=QuantizerTraining(ema_decay=0.9, dead_code_ratio=0.1, dropout_prob=0.5),
        loss=CodecLossConfig(
            reconstruction=ReconstructionWeights(mel=1.0, adversarial=1.0, feature_matching=1.0),
            phases=CodecPhases(adversarial_start=100),
            mel_scales=MelLossConfig(n_ffts=(64, 128, 256, 512), n_mels=32),
            unquantized_share=0.5,
        ),
        discriminator=DiscriminatorConfig.tiny(),
        weight_ema=0.9,
        optim=CodecOptimConfig(lr=3e-3, betas=(0.5, 0.9), weight_decay=0.0, grad_clip=0.0),
        train=LoopConfig(steps=200, batch_size=4, log_every=10, val_every=50, checkpoint_every=100),
        data=CodecDataSection(segment_seconds=0.5, held_out_clips=1, held_out_seconds=1.0),
    )


def mimi() -> CodecTrainConfig:
    return CodecTrainConfig(
        model=CodecModelSection("mimi"),
        quantizer=QuantizerTraining(ema_decay=0.99, dead_code_ratio=0.1, dropout_prob=0.5),
        loss=CodecLossConfig(
            reconstruction=ReconstructionWeights(mel=1.0, adversarial=3.0, feature_matching=3.0),
            phases=CodecPhases(adversarial_start=5000),
            unquantized_share=0.5,
        ),
        discriminator=DiscriminatorConfig.mimi(),
        weight_ema=0.99,
        optim=CodecOptimConfig(lr=8e-4, betas=(0.5, 0.9), weight_decay=0.0, grad_clip=0.0),
        train=LoopConfig(steps=400_000, batch_size=64, log_every=50, val_every=2000, checkpoint_every=5000),
        data=CodecDataSection(segment_seconds=12.0, noise_prob=0.1),
    )


# nanomoshi's codec (docs/nanomoshi.md): Mimi's architecture and 12.5 Hz frames (SEANet ratios 8,6,5,4 and the
# stride-2 resampling: 1920-sample frames), narrower (128 channels, 16 filters), a 2-layer transformer on each
# side, 8 codebooks of 1024 entries (1 semantic + 7 acoustic). Sized to train on 2 CPU cores in a few hours.
NANO_MIMI = {
    "preset": "mimi",
    "seanet": {"dimension": 128, "n_filters": 16},
    "transformer": {"d_model": 128, "num_heads": 4, "num_layers": 2, "dim_feedforward": 512, "context": 250},
    "quantizer": {"dimension": 128, "codebook_dim": 64, "codebook_size": 1024, "num_semantic": 1,
                  "num_acoustic": 7},
}


def nano() -> CodecTrainConfig:
    """nanomoshi's codec on conversations (docs/nanomoshi.md, "The codec's recipe"). Three choices differ from
    Mimi's recipe, each from a failed first run (1000 steps, nothing intelligible, outputs ~15 dB too quiet):
    - loudness per file: per crop, a crop of a pause was raised to speech level (room noise at -24 dBFS);
    - a log-mel floor of 1e-2 plus a linear-magnitude term: with the 1e-5 floor, faint hiss in the bands that
      band-limited TTS voices leave empty cost more than the speech itself, and quiet outputs minimised it;
    - Adam betas (0.9, 0.99): a plain autoencoder converged faster than with the GAN setting (0.5, 0.9).
    24000 steps, the learning rate down a cosine to 1e-4: Whisper's WER on held-out reconstructions was still
    falling steadily at step 4200 (1.04 at 3100, 0.92 at 4200; 0.17 on the originals). The encoder side freezes
    at step 11500 (the LM's codes are final from then on) and the decoder alone trains on, beside the LM stages,
    at about 0.8 s a step. The discriminator trains from step 23000 and the generator listens from 23500: on 2
    CPU cores the discriminator costs 3x the codec's own step, so the steps before it run 4x faster without it."""
    return CodecTrainConfig(
        model=CodecModelSection("mimi", overrides={k: v for k, v in NANO_MIMI.items() if k != "preset"}),
        quantizer=QuantizerTraining(ema_decay=0.99, dead_code_ratio=0.1, dropout_prob=0.5),
        loss=CodecLossConfig(
            reconstruction=ReconstructionWeights(mel=1.0, adversarial=1.0, feature_matching=1.0),
            balancer=BalancerConfig(enabled=True),
            auxiliary=AuxiliaryWeights(commitment=1.0, distillation=1.0),
            phases=CodecPhases(adversarial_start=23500, discriminator_start=23000, encoder_frozen_from=11500),
            mel_scales=MelLossConfig(floor=1e-2, linear=1.0),
            unquantized_share=0.5,
        ),
        discriminator=DiscriminatorConfig(filters=8, n_ffts=(1024, 512, 256), dilations=(1, 2, 4)),
        weight_ema=0.99,
        optim=CodecOptimConfig(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0, grad_clip=0.0),
        schedule=ScheduleConfig("cosine", warmup_steps=0, min_lr_ratio=0.1),
        train=LoopConfig(steps=24000, batch_size=4, log_every=10, val_every=250, checkpoint_every=50,
                         keep_checkpoints=2),
        data=CodecDataSection(segment_seconds=2.0, noise_prob=0.1, loudness_scope="file", held_out_clips=2,
                              held_out_seconds=4.0),
    )


# The first entry is the base of a YAML file that names no preset.
CODEC_TRAIN_PRESETS: dict[str, Callable[[], CodecTrainConfig]] = {"tiny": tiny, "mimi": mimi, "nano": nano}
