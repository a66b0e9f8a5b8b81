"""The codec's losses on hand-made inputs: hinge, feature matching, mel, distillation, perplexity, balancer."""

from __future__ import annotations

import math

import pytest
import torch

from openmoshi.train.balancer import Balancer
from openmoshi.train.codec_losses import (
    MelLossConfig,
    MultiScaleMelLoss,
    SemanticDistillation,
    codebook_perplexity,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    mel_filterbank,
    pool_to_frames,
    waveform_l1,
)
from openmoshi.train.discriminators import DiscriminatorConfig, MultiScaleSTFTDiscriminator


def test_hinge_losses_at_known_logits() -> None:
    real = [torch.tensor([2.0, 0.5, -1.0]), torch.tensor([[1.0, 0.0]])]
    fake = [torch.tensor([-2.0, 0.0, 3.0]), torch.tensor([[-1.0, -0.5]])]
    # scale 0: relu(1 - real) = [0, 0.5, 2] -> 5/6; relu(1 + fake) = [0, 1, 4] -> 5/3
    # scale 1: relu(1 - real) = [0, 1] -> 0.5; relu(1 + fake) = [0, 0.5] -> 0.25
    expected_d = ((5 / 6 + 5 / 3) + (0.5 + 0.25)) / 2
    assert float(hinge_discriminator_loss(real, fake)) == pytest.approx(expected_d)
    # generator: relu(1 - fake): [3, 1, 0] -> 4/3 ; [2, 1.5] -> 1.75
    assert float(hinge_generator_loss(fake)) == pytest.approx((4 / 3 + 1.75) / 2)
    # Beyond the margins nothing is left to learn.
    assert float(hinge_discriminator_loss([torch.full((4,), 1.5)], [torch.full((4,), -1.5)])) == 0.0
    with pytest.raises(ValueError, match="as many"):
        hinge_discriminator_loss(real, fake[:1])


def test_feature_matching_at_known_features() -> None:
    real = [[torch.tensor([1.0, -1.0]), torch.tensor([2.0, 2.0, 2.0, 2.0])]]
    fake = [[torch.tensor([1.5, -1.0]), torch.tensor([2.0, 2.0, 2.0, 4.0])]]
    # layer 0: mean|diff| = 0.25, mean|real| = 1 -> 0.25; layer 1: 0.5 / 2 = 0.25
    assert float(feature_matching_loss(real, fake)) == pytest.approx(0.25)
    assert float(feature_matching_loss(real, real)) == 0.0
    # The real features are a fixed target: no gradient reaches them.
    r = torch.tensor([1.0, 2.0], requires_grad=True)
    f = torch.tensor([0.0, 0.0], requires_grad=True)
    feature_matching_loss([[r]], [[f]]).backward()
    assert r.grad is None and f.grad is not None


def test_mel_loss_zero_for_identical_signals_and_positive_otherwise() -> None:
    mel = MultiScaleMelLoss(24_000)
    t = torch.arange(4800) / 24_000
    x = (0.5 * torch.sin(2 * math.pi * 440 * t))[None, None]
    assert float(mel(x, x.clone())) == 0.0
    y = (0.5 * torch.sin(2 * math.pi * 880 * t))[None, None]
    assert float(mel(x, y)) > 0.5
    assert 0 < float(mel(x, 0.9 * x)) < float(mel(x, y))  # a gain change is a small distance
    assert float(waveform_l1(x, x)) == 0.0 and float(waveform_l1(x, 0.5 * x)) == pytest.approx(
        float(0.5 * x.abs().mean()))
    with pytest.raises(ValueError, match="shapes differ"):
        mel(x, x[..., :-1])


def test_mel_loss_floor_and_linear_term() -> None:
    """A raised floor ignores errors in bands the target leaves empty (high-frequency hiss under band-limited
    speech), which the default floor counts in full; the linear term weighs an error as its magnitude."""
    t = torch.arange(9600) / 24_000
    speech = (0.3 * torch.sin(2 * math.pi * 300 * t))[None, None]
    hiss = speech + 3e-4 * torch.sin(2 * math.pi * 9000 * t)[None, None]  # faint, where the target is empty
    loud = speech * 1.5  # a loud error, where the target is
    low, high = MultiScaleMelLoss(24_000), MultiScaleMelLoss(24_000, MelLossConfig(floor=1e-2))
    assert float(low(hiss, speech)) > float(high(hiss, speech)) * 5  # the default floor: the hiss counts
    assert float(high(hiss, speech)) < 0.05
    lin = MultiScaleMelLoss(24_000, MelLossConfig(floor=1e-2, linear=1.0))
    assert float(lin(speech, speech)) == 0.0
    extra = float(lin(loud, speech)) - float(high(loud, speech))  # the linear term alone: ~0.5 relative error
    assert 0.3 < extra < 0.7
    assert float(lin(hiss, speech)) - float(high(hiss, speech)) < 0.01  # faint errors stay faint


def test_mel_filterbank_covers_every_band() -> None:
    fb = mel_filterbank(64, 16, 24_000)
    assert fb.shape == (16, 33) and (fb.sum(1) > 0).all() and float(fb.max()) == pytest.approx(1.0)
    fb = mel_filterbank(1024, 80, 24_000)
    centres = fb.argmax(1)
    assert (centres[1:] >= centres[:-1]).all()  # increasing centre frequencies


def test_distillation_is_cosine_to_pooled_teacher() -> None:
    head = SemanticDistillation(4, 3)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(3, 4))
    semantic = torch.randn(2, 4, 5)  # [B, D, F]
    # A teacher at 4x the frame rate, equal to the projected student: cosine 1 everywhere after pooling.
    teacher = semantic[:, :3].transpose(1, 2).repeat_interleave(4, dim=1)
    assert float(head(semantic, teacher).detach()) == pytest.approx(0.0, abs=1e-6)
    assert float(head(semantic, -teacher).detach()) == pytest.approx(2.0, abs=1e-6)
    assert pool_to_frames(torch.arange(8.0).view(1, 8, 1), 2).flatten().tolist() == [1.5, 5.5]
    with pytest.raises(ValueError, match="teacher features"):
        head(semantic, torch.randn(2, 5, 7))


def test_perplexity_counts_used_entries() -> None:
    codes = torch.tensor([[[0, 0, 0, 0], [0, 1, 2, 3]]])  # level 0: one entry; level 1: four, equally
    assert codebook_perplexity(codes, 8).tolist() == pytest.approx([1.0, 4.0])


def test_discriminator_shapes_and_gradients() -> None:
    disc = MultiScaleSTFTDiscriminator(DiscriminatorConfig.tiny())
    wav = torch.randn(2, 1, 960, requires_grad=True)
    out = disc(wav)
    assert len(out.logits) == len(out.features) == 3
    for lo, feats in zip(out.logits, out.features, strict=True):
        assert lo.shape[:2] == (2, 1) and len(feats) == 4
    hinge_generator_loss(out.logits).backward()
    assert wav.grad is not None and wav.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        disc(torch.randn(2, 960))


def test_balancer_scales_each_gradient_to_its_share() -> None:
    y = torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    big = 100 * (y ** 2).sum()  # gradient 200 y
    small = 0.01 * y.sum()  # gradient 0.01 everywhere
    balancer = Balancer({"big": 1.0, "small": 3.0}, total_norm=2.0, ema_decay=0.0)
    norms = balancer.backward({"big": big, "small": small}, y)
    g_big, g_small = 200 * y.detach(), torch.full((2, 2), 0.01)
    n_big = g_big.norm(dim=1).mean()
    n_small = g_small.norm(dim=1).mean()
    assert norms["big"] == pytest.approx(float(n_big)) and norms["small"] == pytest.approx(float(n_small))
    expected = 2.0 * (0.25 * g_big / n_big + 0.75 * g_small / n_small) / 2  # / 2 rows: a batch mean
    torch.testing.assert_close(y.grad, expected)
    # The raw scales no longer matter: multiplying a loss by 1000 gives the same gradient.
    y.grad = None
    Balancer({"big": 1.0, "small": 3.0}, total_norm=2.0, ema_decay=0.0).backward(
        {"big": 1000 * big, "small": small}, y)
    torch.testing.assert_close(y.grad, expected)


def test_balancer_extra_loss_and_ema_of_norms() -> None:
    w = torch.tensor([1.0, 1.0], requires_grad=True)
    y = w * 3
    balancer = Balancer({"a": 1.0}, total_norm=1.0, ema_decay=0.5, per_batch_item=False)
    balancer.backward({"a": (y ** 2).sum()}, y, extra=w.sum())
    g = 2 * torch.tensor([3.0, 3.0])
    # dL/dw = 3 * (g / |g|) + 1 (the extra loss, unbalanced)
    torch.testing.assert_close(w.grad, 3 * g / g.norm() + 1)
    # Second step with a gradient twice as large: the EMA norm (bias-corrected) lies between the two.
    w.grad = None
    y = w * 3
    balancer.backward({"a": 2 * (y ** 2).sum()}, y)
    avg = (0.5 * 0.5 * float(g.norm()) + 0.5 * 2 * float(g.norm())) / (0.5 * 0.5 + 0.5)
    torch.testing.assert_close(w.grad, 3 * 2 * g / avg)
    state = balancer.state_dict()
    other = Balancer({"a": 1.0})
    other.load_state_dict(state)
    assert other.norms == balancer.norms
    with pytest.raises(KeyError, match="no balancer weight"):
        balancer.backward({"b": y.sum()}, y)
