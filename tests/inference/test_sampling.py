"""Sampling: greedy, temperature, top-k, top-p, reproducibility."""

import pytest
import torch

from openmoshi.inference.sampling import SamplingConfig, sample


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_greedy_is_argmax():
    logits = torch.randn(5, 100)
    assert torch.equal(sample(logits, SamplingConfig(greedy=True)), logits.argmax(-1))
    assert torch.equal(sample(logits, SamplingConfig(temperature=0.0)), logits.argmax(-1))


def test_distribution_matches_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).expand(20000, -1)
    tokens = sample(logits, SamplingConfig(temperature=1.0, top_k=0), _gen(1))
    freq = torch.bincount(tokens, minlength=4).float() / tokens.numel()
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.015)
    # A lower temperature sharpens the distribution.
    cold = sample(logits, SamplingConfig(temperature=0.3, top_k=0), _gen(1))
    assert (cold == 2).float().mean() > (tokens == 2).float().mean() + 0.2


def test_top_k_restricts_support():
    logits = torch.randn(4, 50)
    cfg = SamplingConfig(temperature=5.0, top_k=3)
    tokens = torch.stack([sample(logits, cfg, _gen(s)) for s in range(200)])
    top3 = logits.topk(3, dim=-1).indices
    for b in range(4):
        assert set(tokens[:, b].tolist()) <= set(top3[b].tolist())
        assert len(set(tokens[:, b].tolist())) == 3


def test_top_p_restricts_support():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log().expand(3000, -1)
    tokens = sample(logits, SamplingConfig(temperature=1.0, top_k=0, top_p=0.7), _gen(2))
    assert set(tokens.tolist()) == {0, 1}
    freq = (tokens == 0).float().mean()
    assert abs(freq - 0.5 / 0.8) < 0.03


def test_reproducible_with_seed():
    logits = torch.randn(8, 2048)
    cfg = SamplingConfig.audio_default()
    a = sample(logits, cfg, _gen(7))
    b = sample(logits, cfg, _gen(7))
    c = sample(logits, cfg, _gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_config_and_shape():
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=1.5)
    with pytest.raises(ValueError, match="B, V"):
        sample(torch.randn(2, 3, 4), SamplingConfig())
