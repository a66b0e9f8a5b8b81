"""The codec training step on a tiny Mimi: it learns (mel falls, codebook usage rises, no dead codes), every
optional part runs and updates what it should, and the weight EMA is what gets exported."""

from __future__ import annotations

import pytest
import torch

from openmoshi.audio import read_audio
from openmoshi.codec.mimi import Mimi, MimiConfig
from openmoshi.codec.quantizer import QuantizerTraining
from openmoshi.train.codec_step import (
    AuxiliaryWeights,
    BalancerConfig,
    CodecBatch,
    CodecLossConfig,
    CodecPhases,
    ReconstructionWeights,
    codec_optimizers,
    codec_parts,
    codec_step,
)
from openmoshi.train.config import ConfigError, merge, resolve_config
from openmoshi.train.discriminators import DiscriminatorConfig, MultiScaleSTFTDiscriminator
from openmoshi.train.ema import WeightEMA

EXAMPLE = "openmoshi/assets/example.wav"


def _speech(seconds: float) -> torch.Tensor:
    audio = torch.from_numpy(read_audio(EXAMPLE))
    return audio[:int(seconds * 24_000)].view(1, 1, -1)


def test_step_overfits_a_second_of_speech() -> None:
    torch.manual_seed(0)
    mimi = Mimi(MimiConfig.tiny())
    mimi.quantizer.training_options = QuantizerTraining(ema_decay=0.8)
    cfg = CodecLossConfig(ReconstructionWeights(adversarial=0, feature_matching=0), BalancerConfig(enabled=False),
                          unquantized_share=0.0)
    parts = codec_parts(mimi, cfg)
    optims = codec_optimizers(parts, lr=3e-3)
    batch = CodecBatch(_speech(1.0))
    history = [codec_step(parts, optims, batch, cfg) for _ in range(20)]
    assert all(set(h) >= {"mel", "commitment", "generator", "perplexity", "dead_codes"} for h in history)
    # Step 0 initialised the codebooks from this very batch (entries are exact copies of its latents: a
    # flattering start); step 1 is the first honest quantization. From there the mel loss falls and the
    # codebook usage rises.
    mel = [h["mel"] for h in history]
    assert sum(mel[-3:]) / 3 < 0.88 * mel[1], mel
    assert history[-1]["perplexity"] > 1.3 * history[1]["perplexity"], [h["perplexity"] for h in history]
    assert history[-1]["dead_codes"] == 0.0


def test_full_step_with_discriminator_balancer_distillation_and_ema() -> None:
    torch.manual_seed(1)
    mimi = Mimi(MimiConfig.tiny())
    mimi.quantizer.training_options = QuantizerTraining(ema_decay=0.9, dropout_prob=0.5)
    disc = MultiScaleSTFTDiscriminator(DiscriminatorConfig.tiny())
    cfg = CodecLossConfig(ReconstructionWeights(l1=0.1), grad_clip=1.0)
    parts = codec_parts(mimi, cfg, disc, teacher_dim=6, ema_decay=0.5)
    optims = codec_optimizers(parts, lr=1e-3)
    assert parts.balancer is not None and parts.distillation is not None and optims.discriminator is not None
    wav = torch.randn(2, 1, 960) * 0.1
    teacher = torch.randn(2, 3, 6)
    disc_before = [p.detach().clone() for p in disc.parameters()]
    head_before = parts.distillation.proj.weight.detach().clone()
    weights_before = mimi.decoder.conv_out.weight.detach().clone()
    metrics = codec_step(parts, optims, CodecBatch(wav, teacher), cfg)
    expected = {"mel", "l1", "adversarial", "feature_matching", "distillation", "commitment", "generator",
                "discriminator", "grad_norm", "perplexity", "dead_codes"}
    assert expected <= set(metrics) and all(isinstance(v, float) for v in metrics.values())
    assert all(v == v for v in metrics.values())  # no NaN
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, disc.parameters(), strict=True))
    assert not torch.equal(head_before, parts.distillation.proj.weight)
    assert set(parts.balancer.norms) == {"mel", "l1", "adversarial", "feature_matching"}
    assert all(p.requires_grad for p in disc.parameters())  # unfrozen after the generator's pass
    # The EMA (decay 0.5) lies halfway between the start and the new weights; the export holds it.
    new = mimi.decoder.conv_out.weight.detach()
    exported = parts.ema.export_state(mimi)
    torch.testing.assert_close(exported["decoder.conv_out.weight"], (weights_before + new) / 2)
    assert set(exported) == set(mimi.state_dict())
    # Without teacher features the distillation is skipped, not an error.
    assert "distillation" not in codec_step(parts, optims, CodecBatch(wav), cfg)


def test_step_configuration_errors() -> None:
    mimi = Mimi(MimiConfig.tiny())
    with pytest.raises(ValueError, match="need a discriminator"):
        codec_parts(mimi, CodecLossConfig())
    with pytest.raises(ValueError, match=r"loss\.reconstruction\.mel must be a finite number >= 0"):
        ReconstructionWeights(mel=-1)
    with pytest.raises(ValueError, match="at least one"):
        ReconstructionWeights(mel=0, adversarial=0, feature_matching=0)
    with pytest.raises(ValueError, match=r"loss\.auxiliary\.distillation"):
        AuxiliaryWeights(distillation=float("nan"))
    with pytest.raises(ValueError, match=r"loss\.grad_clip"):
        CodecLossConfig(grad_clip=-1)
    with pytest.raises(ValueError, match=r"loss\.unquantized_share"):
        CodecLossConfig(unquantized_share=1.5)
    with pytest.raises(ValueError, match=r"loss\.phases\.encoder_frozen_from"):
        CodecPhases(encoder_frozen_from=-1)
    cfg = CodecLossConfig(ReconstructionWeights(adversarial=0, feature_matching=0))
    parts = codec_parts(mimi, cfg)
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        codec_step(parts, codec_optimizers(parts), CodecBatch(torch.randn(2, 480)), cfg)


def test_weight_ema_average_copy_and_state() -> None:
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightEMA(model, decay=0.75)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model)
    assert torch.equal(ema.shadow["weight"], torch.full((2, 2), 1.0))  # 0.75 * 0 + 0.25 * 4
    ema.update(model)
    assert torch.equal(ema.shadow["weight"], torch.full((2, 2), 1.75))
    other = torch.nn.Linear(2, 2)
    ema.copy_to(other)
    assert torch.equal(other.weight, torch.full((2, 2), 1.75))
    restored = WeightEMA(torch.nn.Linear(2, 2), decay=0.75)
    restored.load_state_dict(ema.state_dict())
    assert restored.steps == 2 and torch.equal(restored.shadow["weight"], ema.shadow["weight"])
    warm = WeightEMA(model, decay=0.99, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="does not fit"):
        WeightEMA(torch.nn.Conv1d(1, 1, 1)).load_state_dict(ema.state_dict())


def test_generator_ignores_the_discriminator_before_adversarial_start() -> None:
    torch.manual_seed(2)
    mimi = Mimi(MimiConfig.tiny())
    disc = MultiScaleSTFTDiscriminator(DiscriminatorConfig.tiny())
    cfg = CodecLossConfig(phases=CodecPhases(adversarial_start=3))
    parts = codec_parts(mimi, cfg, disc, ema_decay=None)
    optims = codec_optimizers(parts)
    wav = torch.randn(2, 1, 480) * 0.1
    before = [p.detach().clone() for p in disc.parameters()]
    early = codec_step(parts, optims, CodecBatch(wav), cfg, step=2)
    assert "adversarial" not in early and "feature_matching" not in early and "discriminator" in early
    assert set(parts.balancer.norms) == {"mel"}  # the mel loss had the whole gradient
    assert any(not torch.equal(a, b) for a, b in zip(before, disc.parameters(), strict=True))  # disc trained
    late = codec_step(parts, optims, CodecBatch(wav), cfg, step=3)
    assert {"adversarial", "feature_matching"} <= set(late)


def test_discriminator_waits_for_discriminator_start() -> None:
    torch.manual_seed(3)
    mimi = Mimi(MimiConfig.tiny())
    disc = MultiScaleSTFTDiscriminator(DiscriminatorConfig.tiny())
    cfg = CodecLossConfig(phases=CodecPhases(adversarial_start=4, discriminator_start=2))
    parts = codec_parts(mimi, cfg, disc, ema_decay=None)
    optims = codec_optimizers(parts)
    wav = torch.randn(2, 1, 480) * 0.1
    before = [p.detach().clone() for p in disc.parameters()]
    idle = codec_step(parts, optims, CodecBatch(wav), cfg, step=1)
    assert "discriminator" not in idle and "adversarial" not in idle
    assert all(torch.equal(a, b) for a, b in zip(before, disc.parameters(), strict=True))  # untouched
    warm = codec_step(parts, optims, CodecBatch(wav), cfg, step=2)
    assert "discriminator" in warm and "adversarial" not in warm
    assert any(not torch.equal(a, b) for a, b in zip(before, disc.parameters(), strict=True))
    with pytest.raises(ValueError, match=r"loss\.phases\.discriminator_start"):
        CodecPhases(adversarial_start=4, discriminator_start=5)


def test_loss_section_keys_and_the_old_flat_keys() -> None:
    """The nested keys set what they name; a key of the old flat layout is refused with its new place, whether
    from --set or from a YAML file (a run's config.yaml written before the change), and nothing is read."""
    from openmoshi.train.codec_config import CODEC_TRAIN_PRESETS, CodecTrainConfig

    def resolve(*sets: str) -> CodecTrainConfig:
        return resolve_config(CodecTrainConfig, "tiny", CODEC_TRAIN_PRESETS, sets)

    cfg = resolve("loss.reconstruction.l1=0.5", "loss.balancer.enabled=false", "loss.balancer.total_norm=2",
                  "loss.auxiliary.distillation=0", "loss.phases.discriminator_start=50").loss
    assert (cfg.reconstruction.l1, cfg.reconstruction.adversarial, cfg.balancer.enabled, cfg.balancer.total_norm,
            cfg.auxiliary.distillation, cfg.phases.discriminator_start, cfg.phases.adversarial_start) == (
        0.5, 1.0, False, 2.0, 0.0, 50, 100)
    for old, new in (("loss.balancer_total_norm=2", "loss.balancer_total_norm is now loss.balancer.total_norm"),
                     ("loss.balancer=false", "loss.balancer is now loss.balancer.enabled"),
                     ("loss.mel=2", "loss.mel is now loss.reconstruction.mel"),
                     ("loss.commitment=0", "loss.commitment is now loss.auxiliary.commitment"),
                     ("loss.encoder_frozen_from=5", "loss.encoder_frozen_from is now loss.phases.encoder_frozen_from")):
        with pytest.raises(ConfigError, match=new):
            resolve(old)
    with pytest.raises(ConfigError, match=r"loss\.phases: loss\.phases\.discriminator_start must lie between"):
        resolve("loss.phases.discriminator_start=101")
    with pytest.raises(ConfigError, match=r"loss\.reconstruction\.mel must be"):
        resolve("loss.reconstruction.mel=-1")
    base = CODEC_TRAIN_PRESETS["tiny"]()
    with pytest.raises(ConfigError) as err:
        merge(base, {"loss": {"mel": 1.0, "adversarial_start": 5, "balancer": True, "grad_clip": 0.0}})
    assert str(err.value) == ("moved config keys: loss.mel is now loss.reconstruction.mel; loss.adversarial_start "
                              "is now loss.phases.adversarial_start; loss.balancer is now loss.balancer.enabled")
