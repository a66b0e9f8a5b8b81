"""The LM trainer's configuration (`LMTrainConfig`) and its named presets (`LM_TRAIN_PRESETS`).

Figures from FACTS.md "Training constants":
- `pretrain`: single-stream audio, temporal / depth lr 3e-5 / 2e-4, acoustic delay 2, text masked with p 0.3,
  50% text-only batches, the 7B architecture from scratch;
- `posttrain`: two-stream audio, 3e-6 / 5e-5, acoustic delay 1;
- `finetune`: real two-channel conversations, 2e-6 / 4e-6, Moshi's 8 codebooks scored;
- `finetune_lora`: Kyutai's LoRA recipe (rank 128, scaling 2, all linear layers, lr 2e-6, one-cycle with 5%
  warm-up, grad clip 1.0, 100 s sequences);
- `instruct`: synthetic dialogues, 2e-6 for both parts;
- `tiny`: the tiny architecture and fast settings, trains (or fine-tunes a tiny model) here in seconds;
- `nano`, `nano_post`: nanomoshi's two stages (docs/nanomoshi.md), a ~15 M-parameter model trained on 2 CPU cores.
All use AdamW with betas (0.9, 0.95) and weight decay 0.1. With `--model` the checkpoint's architecture stands
and `model.*` is ignored; everything else comes from the preset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .config import LoopConfig, OptimConfig, ScheduleConfig


@dataclass
class LMArchConfig:
    """Where the model comes from. `init`: a folder or hub repo in Kyutai's layout to start from (`--model`);
    its architecture then stands and `preset` / `overrides` are ignored. Otherwise a new model of the
    `LM_PRESETS` architecture `preset` with `LMConfig` field `overrides`. `assets`: a folder or repo whose Mimi
    and tokenizer a from-scratch run uses (data preparation, export); None = `init`'s."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    assets: str | None = None


@dataclass
class LMLossSection:
    """FACTS.md's loss. `codebooks`: "moshi" scores Moshi's own codebooks (the first n_q / 2 generated ones),
    "all" every generated codebook (a model with dep_q = n_q that also predicts the user).
    `acoustic_delay` None keeps the model's delays; an integer sets every acoustic codebook's delay (text and
    semantic codebooks stay at 0). `text_mask_prob`: share of sequences whose text stream is removed (no input,
    no target). `text_only_share`: share of steps whose batch keeps the text stream alone (audio removed).
    `user_text_weight` (0 = off): the auxiliary user-transcript loss (`lm_user_text.py`, training only), asked
    `user_text_delay` frames after each of the user's word pieces; it needs the data's user words (prepared
    data, or the synthetic set)."""

    semantic_weight: float = 100.0
    acoustic_weight: float = 1.0
    text_padding_weight: float = 0.5
    codebooks: Literal["moshi", "all"] = "moshi"
    acoustic_delay: int | None = None
    text_mask_prob: float = 0.0
    text_only_share: float = 0.0
    user_text_weight: float = 0.0
    user_text_delay: int = 6

    def __post_init__(self) -> None:
        if not (math.isfinite(self.user_text_weight) and self.user_text_weight >= 0):
            raise ValueError(f"loss.user_text_weight must be a finite number >= 0, got {self.user_text_weight}")
        if self.user_text_delay < 0:
            raise ValueError(f"loss.user_text_delay must be >= 0, got {self.user_text_delay}")
        for name in ("text_mask_prob", "text_only_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"loss.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.acoustic_delay is not None and self.acoustic_delay < 0:
            raise ValueError(f"loss.acoustic_delay must be >= 0, got {self.acoustic_delay}")


@dataclass
class LMOptimConfig(OptimConfig):
    """AdamW with the temporal transformer (and embeddings, text head) at `lr`, the depth transformer at
    `depth_lr`."""

    depth_lr: float = 3e-4


@dataclass
class LMDataConfig:
    """`manifest`: the JSONL dataset (prepared on first use, next to it); `val_share`: the share of its
    conversations held out for validation (chosen by a hash of each path). `seq_frames`: crop length in 12.5 Hz
    frames (1250 = 100 s). `synthetic`: an in-memory synthetic dataset (smoke tests, benchmarks) instead."""

    manifest: str | None = None
    val_share: float = 0.05
    seq_frames: int = 250
    synthetic: bool = False


@dataclass
class LoraSection:
    """LoRA fine-tuning: the base frozen, adapters of `rank` with `scaling` on the `targets` linear layers."""

    enabled: bool = False
    rank: int = 128
    scaling: float = 2.0
    targets: list[str] = field(default_factory=lambda: ["all"])


@dataclass
class LMTrainConfig:
    model: LMArchConfig = field(default_factory=LMArchConfig)
    loss: LMLossSection = field(default_factory=LMLossSection)
    optim: LMOptimConfig = field(default_factory=LMOptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    data: LMDataConfig = field(default_factory=LMDataConfig)
    lora: LoraSection = field(default_factory=LoraSection)

    def __post_init__(self) -> None:
        t = self.train
        for name in ("steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if getattr(t, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(t, name)}")
        for name in ("val_every", "val_batches", "checkpoint_every"):
            if getattr(t, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(t, name)}")
        if t.batch_size % t.grad_accum:
            raise ValueError(f"train.batch_size {t.batch_size} is not a multiple of train.grad_accum {t.grad_accum}")
        if not 0 <= self.data.val_share < 1:
            raise ValueError(f"data.val_share must be in [0, 1), got {self.data.val_share}")
        if self.data.seq_frames < 2:
            raise ValueError(f"data.seq_frames must be >= 2, got {self.data.seq_frames}")
        if self.optim.lr < 0 or self.optim.depth_lr < 0 or self.optim.grad_clip < 0:
            raise ValueError("optim.lr, optim.depth_lr and optim.grad_clip must be >= 0")
        if self.lora.rank < 1 or self.lora.scaling <= 0:
            raise ValueError("lora.rank must be >= 1 and lora.scaling > 0")


def _optim(lr: float, depth_lr: float, **kw: Any) -> LMOptimConfig:
    return LMOptimConfig(lr=lr, depth_lr=depth_lr, betas=(0.9, 0.95), weight_decay=0.1, **kw)


def tiny() -> LMTrainConfig:
    return LMTrainConfig(
        model=LMArchConfig("tiny"),
        optim=_optim(3e-3, 3e-3),
        schedule=ScheduleConfig("cosine", warmup_steps=5, min_lr_ratio=0.1),
        train=LoopConfig(steps=100, batch_size=4, log_every=5, val_every=20, val_batches=2, checkpoint_every=50),
        data=LMDataConfig(seq_frames=16),
    )


def pretrain() -> LMTrainConfig:
    return LMTrainConfig(
        model=LMArchConfig("moshiko_7b"),
        loss=LMLossSection(acoustic_delay=2, text_mask_prob=0.3, text_only_share=0.5),
        optim=_optim(3e-5, 2e-4),
        schedule=ScheduleConfig("cosine", warmup_steps=1000),
        train=LoopConfig(steps=100_000, batch_size=64, precision="bf16", activation_checkpointing=True,
                         val_every=1000, checkpoint_every=1000),
        data=LMDataConfig(seq_frames=1250),
    )


def posttrain() -> LMTrainConfig:
    cfg = pretrain()
    cfg.loss = LMLossSection(acoustic_delay=1)
    cfg.optim = _optim(3e-6, 5e-5)
    cfg.train.steps = 10_000
    return cfg


def finetune() -> LMTrainConfig:
    return LMTrainConfig(
        model=LMArchConfig("moshiko_7b"),
        loss=LMLossSection(codebooks="moshi"),
        optim=_optim(2e-6, 4e-6),
        schedule=ScheduleConfig("cosine", warmup_share=0.05),
        train=LoopConfig(steps=2000, batch_size=16, precision="bf16", activation_checkpointing=True,
                         val_every=200, checkpoint_every=500),
        data=LMDataConfig(seq_frames=1250),
    )


def finetune_lora() -> LMTrainConfig:
    cfg = finetune()
    cfg.optim = _optim(2e-6, 2e-6, grad_clip=1.0)
    cfg.schedule = ScheduleConfig("onecycle", warmup_share=0.05)
    cfg.lora = LoraSection(enabled=True, rank=128, scaling=2.0, targets=["all"])
    return cfg


def instruct() -> LMTrainConfig:
    cfg = finetune()
    cfg.optim = _optim(2e-6, 2e-6)
    return cfg


# nanomoshi's LM (docs/nanomoshi.md): an RQ-Transformer of Moshi's structure (text + 8 + 8 codebooks, the depth
# transformer generating Moshi's 8), 6 temporal layers of 256, a 1-layer depth transformer of 128, the nano
# codec's 1024-entry codebooks and a 1024-piece tokenizer; 16 s crops. 13.5 M parameters. The depth transformer has
# one layer, not two: 20% less training compute and a 4 ms cheaper step (compiled, batch 4), for real time.
NANO_LM = dict(
    dim=256, num_layers=6, num_heads=4, hidden=704, context=250, n_q=16, dep_q=8, card=1024, text_card=1024,
    delays=(0,) + (0, 1, 1, 1, 1, 1, 1, 1) * 2, depformer_dim=128, depformer_num_layers=1,
    depformer_num_heads=4, depformer_hidden=352, text_padding_id=3, text_end_padding_id=0,
)


def nano() -> LMTrainConfig:
    """nanomoshi's first stage, from scratch: acoustic delay 2 and the text stream masked in 30% of the
    sequences (FACTS.md's pre-training recipe), on whatever the data is (the synthetic dialogues), with the
    auxiliary user-transcript loss (a model this small otherwise never learns what the user asked)."""
    return LMTrainConfig(
        model=LMArchConfig("tiny", overrides={k: (list(v) if isinstance(v, tuple) else v)
                                              for k, v in NANO_LM.items()}),
        loss=LMLossSection(codebooks="moshi", acoustic_delay=2, text_mask_prob=0.3, user_text_weight=1.0),
        optim=_optim(1e-3, 2e-3, grad_clip=1.0),
        schedule=ScheduleConfig("cosine", warmup_steps=100, min_lr_ratio=0.1),
        train=LoopConfig(steps=800, batch_size=8, log_every=10, val_every=200, val_batches=4,
                         checkpoint_every=25, keep_checkpoints=2),
        data=LMDataConfig(seq_frames=200, val_share=0.03),
    )


def nano_post() -> LMTrainConfig:
    """nanomoshi's second stage (`--model` = the first stage's export): the dialogues with acoustic delay 1 and
    the whole text stream (FACTS.md's post-training), at a lower learning rate."""
    cfg = nano()
    cfg.loss = LMLossSection(codebooks="moshi", acoustic_delay=1, user_text_weight=1.0)
    cfg.optim = _optim(5e-4, 1e-3, grad_clip=1.0)
    cfg.schedule = ScheduleConfig("cosine", warmup_steps=50, min_lr_ratio=0.05)
    cfg.train.steps = 1600
    return cfg


# The first entry is the base of a YAML file that names no preset.
LM_TRAIN_PRESETS: dict[str, Callable[[], LMTrainConfig]] = {
    "tiny": tiny, "pretrain": pretrain, "posttrain": posttrain, "finetune": finetune,
    "finetune_lora": finetune_lora, "instruct": instruct, "nano": nano, "nano_post": nano_post,
}
