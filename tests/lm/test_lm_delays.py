"""Delaying / undelaying token streams."""

import os

import pytest
import torch

from openmoshi.lm.delays import delay_codes, undelay

os.environ.setdefault("NO_TORCH_COMPILE", "1")
from moshi.models.lm_utils import _delay_sequence, _undelay_sequence  # noqa: E402


@pytest.mark.parametrize("delays", [[0, 0, 1, 1], [0, 2, 1, 0], [2, 2, 2, 2], [0, 0, 0, 0]])
def test_delay_then_undelay_round_trip(delays):
    B, K, T = 2, len(delays), 7
    codes = torch.randint(0, 50, (B, K, T))
    initial = torch.tensor([90, 91, 92, 93])
    delayed = delay_codes(codes, delays, initial)
    for k, d in enumerate(delays):
        assert (delayed[:, k, :d] == initial[k]).all()  # initial tokens in front
        assert torch.equal(delayed[:, k, d:], codes[:, k, : T - d])
    back, mask = undelay(delayed, delays, fill_value=-7)
    for k, d in enumerate(delays):
        assert torch.equal(back[:, k, : T - d], codes[:, k, : T - d])
        assert (back[:, k, T - d:] == -7).all()
        assert mask[:, k, : T - d].all() and not mask[:, k, T - d:].any()


def test_undelay_of_float_values_with_trailing_dims():
    delays = [0, 1, 2]
    x = torch.randn(2, 3, 6, 5)
    out, mask = undelay(x, delays)
    assert torch.equal(out[:, 2, :4], x[:, 2, 2:])
    assert torch.isnan(out[:, 2, 4:]).all() and mask.sum() == 2 * (6 + 5 + 4)


def test_matches_reference_conventions():
    delays = [0, 0, 1, 2, 1]
    codes = torch.randint(0, 50, (3, 5, 9))
    initial = torch.tensor([100, 64, 64, 64, 64])
    ref = _delay_sequence(delays, codes, initial.view(1, -1, 1).expand(3, -1, -1))
    assert torch.equal(delay_codes(codes, delays, initial), ref)
    logits = torch.randn(3, 5, 9, 4)
    ref_out, ref_mask = _undelay_sequence(delays, logits, fill_value=float("nan"))
    out, mask = undelay(logits, delays)
    assert torch.equal(mask, ref_mask)
    assert torch.allclose(out, ref_out, equal_nan=True)


def test_bad_delays():
    with pytest.raises(ValueError, match="delays"):
        delay_codes(torch.zeros(1, 3, 4, dtype=torch.long), [0, 1], torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=">= 0"):
        undelay(torch.zeros(1, 2, 4), [0, -1])
