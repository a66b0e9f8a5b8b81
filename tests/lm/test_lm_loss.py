"""lm/loss.py: Moshi's weighted cross-entropy against a hand computation, NaN-free at masked positions."""

import math

import pytest
import torch

from openmoshi.lm.config import LMConfig
from openmoshi.lm.loss import LossConfig, lm_loss
from openmoshi.lm.model import LMModel, LMOutput


def ce(logits: list[float], target: int) -> float:
    """Cross-entropy by hand: log(sum exp) - logit[target]."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[target]


def tiny_output():
    """B=1, T=3, text vocab 5, dep_q=2 codebooks of 4 codes. Text targets: 7 (word), 3 (PAD), 0 (EPAD, masked)."""
    text_logits = torch.tensor([[[[0.5, -1.0, 2.0, 0.0, 1.0], [1.0, 0.0, 0.0, 3.0, -2.0], [0.0] * 5]]])
    text_mask = torch.tensor([[[True, True, False]]])
    audio_logits = torch.tensor([[
        [[1.0, 2.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.5]],
        [[0.3, -0.2, 1.5, 0.0], [1.0, 1.0, -1.0, 2.0], [0.0, 0.0, 0.0, 0.0]],
    ]])
    audio_mask = torch.tensor([[[True, True, True], [True, True, False]]])
    codes = torch.tensor([[[4, 3, 0], [1, 3, 0], [2, 3, -1]]])  # [B, K=3, T]
    return LMOutput(text_logits, text_mask, audio_logits, audio_mask), codes


def expected(semantic=100.0, acoustic=1.0, pad_w=0.5):
    text = (1.0 * ce([0.5, -1.0, 2.0, 0.0, 1.0], 4) + pad_w * ce([1.0, 0.0, 0.0, 3.0, -2.0], 3)) / (1.0 + pad_w)
    cb0 = [ce([1.0, 2.0, 0.0, -1.0], 1), ce([0.0, 0.0, 0.0, 0.0], 3), ce([2.0, 1.0, 0.0, 0.5], 0)]
    cb1 = [ce([0.3, -0.2, 1.5, 0.0], 2), ce([1.0, 1.0, -1.0, 2.0], 3)]
    audio = (semantic * sum(cb0) + acoustic * sum(cb1)) / (semantic * 3 + acoustic * 2)
    return text, audio


def test_matches_hand_computation():
    out, codes = tiny_output()
    loss = lm_loss(out, codes)
    text, audio = expected()
    assert loss.text.item() == pytest.approx(text, rel=1e-6)
    assert loss.audio.item() == pytest.approx(audio, rel=1e-6)
    assert loss.total.item() == pytest.approx(text + audio, rel=1e-6)


def test_configurable_weights_and_codebooks():
    out, codes = tiny_output()
    loss = lm_loss(out, codes, LossConfig(semantic_weight=3.0, acoustic_weight=2.0, text_padding_weight=0.25))
    text, audio = expected(3.0, 2.0, 0.25)
    assert loss.text.item() == pytest.approx(text, rel=1e-6)
    assert loss.audio.item() == pytest.approx(audio, rel=1e-6)
    only_acoustic = lm_loss(out, codes, LossConfig(audio_codebooks=(1,)))
    cb1 = (ce([0.3, -0.2, 1.5, 0.0], 2) + ce([1.0, 1.0, -1.0, 2.0], 3)) / 2
    assert only_acoustic.audio.item() == pytest.approx(cb1, rel=1e-6)
    # No padding ids: the PAD target weighs 1 like the others.
    assert lm_loss(out, codes, LossConfig(text_padding_ids=())).text.item() == pytest.approx(expected(pad_w=1.0)[0])
    assert LossConfig.for_model(LMConfig.tiny()).text_padding_ids == (3, 0)
    with pytest.raises(ValueError, match="audio_codebooks"):
        lm_loss(out, codes, LossConfig(audio_codebooks=(2,)))


def test_nan_and_inf_at_masked_positions_change_nothing():
    out, codes = tiny_output()
    clean = lm_loss(out, codes).total
    for bad in (float("nan"), float("inf"), -float("inf")):
        text_logits = out.text_logits.clone().requires_grad_(True)
        audio_logits = out.audio_logits.clone()
        audio_logits[0, 1, 2] = bad
        with torch.no_grad():
            text_logits[0, 0, 2] = bad
        audio_logits.requires_grad_(True)
        poisoned = LMOutput(text_logits, out.text_mask, audio_logits, out.audio_mask)
        loss = lm_loss(poisoned, codes).total
        assert torch.equal(loss, clean)
        loss.backward()
        assert torch.isfinite(text_logits.grad).all() and torch.isfinite(audio_logits.grad).all()
        assert (audio_logits.grad[0, 1, 2] == 0).all() and (text_logits.grad[0, 0, 2] == 0).all()


def test_no_valid_position_gives_zero():
    out, codes = tiny_output()
    empty = LMOutput(out.text_logits, torch.zeros_like(out.text_mask), out.audio_logits, out.audio_mask)
    assert lm_loss(empty, codes).text.item() == 0.0


def test_on_the_model_output():
    cfg = LMConfig.tiny()
    model = LMModel(cfg)
    codes = torch.randint(0, cfg.card, (2, cfg.num_streams, 6))
    codes[:, 0] = torch.randint(0, cfg.text_card, (2, 6))
    codes[0, 2, 1] = -1
    loss = lm_loss(model(codes), codes)
    assert torch.isfinite(loss.total) and loss.text > 0 and loss.audio > 0
    with pytest.raises(ValueError, match="codes must be"):
        lm_loss(model(codes), codes[:, :, :4])
