"""nanomoshi's presets: the codec and LM configs resolve by name, have the sizes docs/nanomoshi.md states
(12.5 Hz, 8 codebooks of 1024, the LM's ids consistent with the tokenizer's), fit the 50 MB budget in bf16, and
each takes a training step that changes its weights with finite losses."""

from __future__ import annotations

import torch

from openmoshi.codec.mimi import Mimi
from openmoshi.data.tokenizer import PAD_ID, UNK_ID
from openmoshi.lm.model import LMModel
from openmoshi.train.codec_config import CODEC_TRAIN_PRESETS
from openmoshi.train.codec_step import CodecBatch, codec_optimizers, codec_parts, codec_step
from openmoshi.train.codec_trainer import mimi_config
from openmoshi.train.config import resolve_config
from openmoshi.train.discriminators import MultiScaleSTFTDiscriminator
from openmoshi.train.lm_config import LM_TRAIN_PRESETS, LMTrainConfig
from openmoshi.train.lm_data import random_sequences
from openmoshi.train.lm_step import lm_train_loss, loss_config
from openmoshi.train.lm_trainer import resolve_model_source


def test_codec_preset_is_a_12_5_hz_mimi_with_8_codebooks() -> None:
    cfg = CODEC_TRAIN_PRESETS["nano"]()
    m = mimi_config(cfg)
    assert m.frame_rate == 12.5 and m.frame_size == 1920
    assert m.num_codebooks == 8 and m.quantizer.num_codebooks == 8 and m.quantizer.codebook_size == 1024
    assert m.quantizer.num_semantic == 1 and m.seanet.dimension == 128
    assert cfg.train.checkpoint_every > 0 and cfg.train.steps > cfg.loss.phases.adversarial_start


def test_codec_preset_takes_a_step() -> None:
    torch.manual_seed(0)
    cfg = CODEC_TRAIN_PRESETS["nano"]()
    mimi = Mimi(mimi_config(cfg))
    mimi.init_weights()
    mimi.quantizer.training_options = cfg.quantizer
    mimi.train()
    parts = codec_parts(mimi, cfg.loss, MultiScaleSTFTDiscriminator(cfg.discriminator), teacher_dim=384,
                        ema_decay=cfg.weight_ema)
    optims = codec_optimizers(parts, lr=cfg.optim.lr, betas=cfg.optim.betas)
    before = next(mimi.encoder.parameters()).detach().clone()
    t = torch.arange(2 * 1920 * 4) / 24_000
    wav = (0.1 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 3 * t)).view(1, 1, -1).repeat(2, 1, 1)
    teacher = torch.randn(2, 16, 384)  # [B, F_t, 384] Whisper-like features at 50 Hz (distillation on)
    metrics = codec_step(parts, optims, CodecBatch(wav, teacher), cfg.loss, step=0)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert "distillation" in metrics and metrics["mel"] > 0
    assert not torch.equal(before, next(mimi.encoder.parameters()))


def test_lm_presets_resolve_with_the_tokenizers_ids_and_fit_the_budget() -> None:
    pre = resolve_config(LMTrainConfig, "nano", LM_TRAIN_PRESETS, [])
    post = resolve_config(LMTrainConfig, "nano_post", LM_TRAIN_PRESETS, [])
    a, b = resolve_model_source(pre).cfg, resolve_model_source(post).cfg
    assert a.text_end_padding_id == UNK_ID == 0 and a.text_padding_id == PAD_ID == 3
    assert a.card == 1024 and a.n_q == 16 and a.dep_q == 8 and a.text_card == 1024
    assert max(a.delays) == 2 and max(b.delays) == 1  # FACTS.md: delay 2 in pre-training, 1 after
    assert a.delays[1] == a.delays[9] == 0  # the semantic codebooks are not delayed
    assert pre.loss.text_mask_prob > 0 and post.loss.text_mask_prob == 0
    with torch.device("meta"):
        n = sum(p.numel() for p in LMModel(a).parameters())
    assert 5e6 < n < 20e6
    codec = 2.7e6 * 4  # the codec stays fp32 (~2.6 M parameters, plus its codebooks)
    assert n * 2 + codec < 50 * 2**20  # bf16 LM + fp32 codec within the 50 MB budget


def test_lm_preset_takes_a_step_on_its_own_grid() -> None:
    torch.manual_seed(0)
    cfg = resolve_config(LMTrainConfig, "nano", LM_TRAIN_PRESETS, ["model.overrides.num_layers=1"])
    lm_cfg = resolve_model_source(cfg).cfg
    model = LMModel(lm_cfg)
    model.init_weights()
    codes = random_sequences(lm_cfg, 2, 12, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    losses = []
    for _ in range(3):
        loss, _ = lm_train_loss(model, codes, loss_config(lm_cfg, cfg.loss))
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        losses.append(loss.total.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
