"""Sampling: greedy, temperature, top-k, top-p, reproducibility; per-row settings and random streams."""

import pytest
import torch

from openmoshi.inference.sampling import (
    RowSampling,
    SamplingConfig,
    bits_to_uniform,
    draw_keys,
    sample,
    sample_rows,
    seed_key,
    uniform_noise,
)


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


# ---- per-row sampling: settings per row, a counter-based random stream per row ------------------------------


def _rows(configs):
    s = RowSampling(len(configs), SamplingConfig(), "cpu")
    for r, c in enumerate(configs):
        s.set([r], c)
    return s


def _keys(n, seed0=0, counter=0, stream=0):
    seeds = torch.tensor([seed_key(s) for s in range(seed0, seed0 + n)])
    return draw_keys(seeds, torch.full((n,), counter), [stream])[:, 0]


def test_uniform_noise_is_uniform_and_keyed_by_every_input():
    keys = _keys(4)
    u = uniform_noise(keys, torch.arange(50000))
    assert u.shape == (4, 50000) and u.dtype == torch.float32
    assert (u > 0).all() and (u < 1).all()
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.std() - 12 ** -0.5) < 0.005
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.005
    assert torch.equal(u, uniform_noise(keys, torch.arange(50000)))
    base = uniform_noise(keys, torch.arange(64))
    for other in (uniform_noise(_keys(4, seed0=1), torch.arange(64)),
                  uniform_noise(_keys(4, counter=1), torch.arange(64)),
                  uniform_noise(_keys(4, stream=1), torch.arange(64)),
                  uniform_noise(keys, torch.arange(1, 65))):
        assert (other != base).float().mean() > 0.99
    # adjacent seeds are uncorrelated; a 2^64-periodic seed space (negative and huge seeds are fine)
    assert abs(torch.corrcoef(torch.stack([base[0], base[1]]))[0, 1]) < 0.35
    assert seed_key(-1) == seed_key(2 ** 64 - 1) and seed_key(0) != seed_key(1)


def test_extreme_bits_give_finite_gumbel_noise():
    bits = torch.tensor([2**63 - 1, -2**63, 0, -1, 2**41 - 1, -2**41])
    u = bits_to_uniform(bits)
    assert (u > 0).all() and (u < 1).all()
    assert torch.isfinite(-torch.log(-torch.log(u))).all()
    assert u.max() == 1 - 2**-24 and u.min() == 2**-24


def test_sample_rows_matches_softmax_per_row_temperature():
    n = 20000
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).expand(2 * n, -1)
    hot, cold = SamplingConfig(temperature=1.0, top_k=0), SamplingConfig(temperature=0.3, top_k=0)
    settings = RowSampling(2 * n, hot, "cpu")
    settings.set(range(n, 2 * n), cold)
    tokens = sample_rows(logits, settings, _keys(2 * n))
    for half, temp in ((tokens[:n], 1.0), (tokens[n:], 0.3)):
        freq = torch.bincount(half, minlength=4).float() / n
        assert torch.allclose(freq, torch.softmax(logits[0] / temp, -1), atol=0.015), (temp, freq)


def test_sample_rows_top_k_and_top_p_per_row():
    logits = torch.randn(1, 50).expand(3000, -1) * 0.1
    top3, top10 = SamplingConfig(temperature=5.0, top_k=3), SamplingConfig(temperature=5.0, top_k=10)
    settings = RowSampling(3000, top3, "cpu")
    settings.set(range(1500, 3000), top10)
    tokens = sample_rows(logits, settings, _keys(3000))
    order = logits[0].topk(50).indices.tolist()
    assert set(tokens[:1500].tolist()) == set(order[:3])
    assert set(tokens[1500:].tolist()) == set(order[:10])
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    nucleus = SamplingConfig(temperature=1.0, top_k=0, top_p=0.7)
    settings = RowSampling(6000, nucleus, "cpu")
    settings.set(range(3000, 6000), SamplingConfig(temperature=1.0, top_k=0))
    tokens = sample_rows(probs.log().expand(6000, -1), settings, _keys(6000))
    assert set(tokens[:3000].tolist()) == {0, 1} and set(tokens[3000:].tolist()) == {0, 1, 2, 3}
    assert abs((tokens[:3000] == 0).float().mean() - 0.5 / 0.8) < 0.03


def test_a_rows_draw_ignores_the_other_rows():
    """Same logits, settings, seed and counter -> same token, whatever the rest of the batch samples with."""
    torch.manual_seed(0)
    logits = torch.randn(6, 300) * 2
    mine = [SamplingConfig(0.8, 25), SamplingConfig(1.2, 0), SamplingConfig(0.7, 0, 0.9), SamplingConfig(1.0, 40, 0.5),
            SamplingConfig(greedy=True), SamplingConfig(0.9, 299)]
    others = [SamplingConfig(greedy=True), SamplingConfig(0.5, 250), SamplingConfig(1.0, 0, 0.3),
              SamplingConfig(2.0, 3)]
    for counter in range(20):
        keys = _keys(6, seed0=3, counter=counter)
        batch = sample_rows(logits, _rows(mine), keys)
        for r in range(6):
            alone = sample_rows(logits[r:r + 1], _rows([mine[r]]), keys[r:r + 1])
            assert batch[r] == alone[0], (counter, r)
            for o in others:  # beside a row with other settings, in either position
                pair = sample_rows(logits[[r, r]], _rows([o, mine[r]]), keys[[r, r]])
                assert pair[1] == alone[0], (counter, r, o)
    assert torch.equal(sample_rows(logits, _rows([SamplingConfig(greedy=True)] * 6), keys), logits.argmax(-1))


def test_sample_rows_is_reproducible_and_seeded():
    logits = torch.randn(8, 2048)
    settings = RowSampling(8, SamplingConfig.audio_default(), "cpu")
    a = sample_rows(logits, settings, _keys(8))
    assert torch.equal(a, sample_rows(logits, settings, _keys(8)))
    assert not torch.equal(a, sample_rows(logits, settings, _keys(8, seed0=100)))
    assert not torch.equal(a, sample_rows(logits, settings, _keys(8, counter=1)))
    with pytest.raises(ValueError, match="N, V"):
        sample_rows(torch.randn(2, 3, 4), settings, _keys(2))
