"""Each sampling setting reaches the draw it is meant for, checked token for token against the reference.

Kyutai's sampler (`moshi.utils.sampling.sample_token`) draws a categorical sample as argmax(p / Exp(1) noise),
with the noise from torch's global generator, over the sorted top-k (or top-p) candidates. Our batch sampler
`sample` uses the same exact method with a caller-owned generator, and the generator's per-row sampler draws the
same sample by Gumbel-max from its own counter-based noise: with that noise replaced by the reference's
(tests/inference/reference_noise.py), seeding both alike gives the SAME tokens, not just the same distribution.
These tests compare draws one for one (sampled, not greedy), for the sampler alone and for whole streaming
generations against the reference LMGen, with text and audio settings chosen different so that text sampled
with the audio settings (or the reverse), a setting ignored, or a temperature dropped changes tokens.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))  # shared LM test helpers
import moshi.models.lm as ref_lm  # noqa: E402
from lm_testutils import make_pair, one_thread  # noqa: E402
from moshi.utils.sampling import sample_token  # noqa: E402
from reference_noise import reference_noise  # noqa: E402

from openmoshi.inference.generator import LMGenerator  # noqa: E402
from openmoshi.inference.sampling import SamplingConfig, sample  # noqa: E402
from openmoshi.lm.config import LMConfig  # noqa: E402

_one_thread = pytest.fixture(autouse=True)(one_thread)


def _ref_sample(logits, temp, top_k, top_p, seed):
    torch.manual_seed(seed)
    return sample_token(logits, True, temp, top_k, top_p)


@pytest.mark.parametrize("temp, top_k, top_p", [
    (1.0, 0, 0.0), (0.4, 0, 0.0), (2.5, 0, 0.0), (1.0, 5, 0.0), (0.7, 25, 0.0), (1.3, 1, 0.0),
    (1.0, 0, 0.5), (0.8, 0, 0.9), (0.0, 7, 0.0),
])
def test_sampler_draws_equal_the_references(temp, top_k, top_p):
    logits = 2.0 * torch.randn(16, 100, generator=torch.Generator().manual_seed(3))
    cfg = SamplingConfig(temperature=temp, top_k=top_k, top_p=top_p)
    for seed in range(20):
        ours = sample(logits, cfg, torch.Generator().manual_seed(seed))
        assert torch.equal(ours, _ref_sample(logits, temp, top_k, top_p, seed)), seed


def test_each_setting_changes_the_draws():
    """The parity above means something: changing any one setting changes the draws of the same seeds."""
    logits = 2.0 * torch.randn(16, 100, generator=torch.Generator().manual_seed(3))
    base = SamplingConfig(temperature=1.0, top_k=0)

    def draws(cfg):
        return torch.stack([sample(logits, cfg, torch.Generator().manual_seed(s)) for s in range(20)])

    ref = draws(base)
    for other in (SamplingConfig(temperature=0.5, top_k=0), SamplingConfig(temperature=1.0, top_k=5),
                  SamplingConfig(temperature=1.0, top_k=0, top_p=0.5)):
        assert not torch.equal(draws(other), ref), other


def test_top_k_one_is_greedy_at_any_temperature():
    logits = torch.randn(64, 300, generator=torch.Generator().manual_seed(1))
    for temp in (0.1, 1.0, 10.0):
        for seed in range(5):
            drawn = sample(logits, SamplingConfig(temperature=temp, top_k=1), torch.Generator().manual_seed(seed))
            assert torch.equal(drawn, logits.argmax(-1))


# ---- whole generations against the reference LMGen ----------------------------------------------------

CONFIGS = {"moshiko-like": LMConfig.tiny(), "delay2": LMConfig.tiny(acoustic_delay=2),
           "dep_q16": LMConfig.tiny(dep_q=16)}
# (text temperature, text top-k, audio temperature, audio top-k): text and audio always differ.
SETTINGS = {"both-sampled": (0.6, 3, 1.3, 7), "text-greedy": (0.0, 3, 1.1, 0), "audio-greedy": (1.2, 0, 0.0, 5),
            "top-k-only": (1.0, 4, 1.0, 9)}


def reference_run(ref, user, settings, seed, top_p=(0.0, 0.0)):
    """The reference LMGen, sampling with `settings` after torch.manual_seed(seed): outputs per step."""
    temp_text, top_k_text, temp, top_k = settings
    gen = ref_lm.LMGen(ref, use_sampling=True, temp=temp, top_k=top_k, temp_text=temp_text, top_k_text=top_k_text)
    outs = []
    text_card = ref.text_emb.weight.shape[0] - 1
    real = ref_lm.sample_token

    def with_top_p(logits, use_sampling, t, k, p=0.0):  # LMGen has no top-p: add it per stream (by vocabulary)
        return real(logits, use_sampling, t, k, top_p[0] if logits.shape[-1] == text_card else top_p[1])

    ref_lm.sample_token = with_top_p
    try:
        torch.manual_seed(seed)
        with gen.streaming(user.shape[1]), torch.no_grad():
            for t in range(user.shape[0]):
                o = gen.step(user[t][:, :, None])  # [B, 0, 1] when dep_q == n_q
                outs.append(None if o is None else o[:, :, 0])
    finally:
        ref_lm.sample_token = real
    return outs


def our_run(model, user, settings, seed, top_p=(0.0, 0.0)):
    temp_text, top_k_text, temp, top_k = settings
    text = SamplingConfig(temperature=temp_text, top_k=top_k_text, top_p=top_p[0])
    audio = SamplingConfig(temperature=temp, top_k=top_k, top_p=top_p[1])
    outs = []
    with reference_noise(seed), LMGenerator(model, user.shape[1], text_sampling=text, audio_sampling=audio) as g:
        for t in range(user.shape[0]):
            o = g.step(user[t] if user.shape[2] else None)
            outs.append(None if o is None else torch.cat([o.text[:, None], o.audio], dim=1))
    return outs


def _same(a, b):
    return all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
               for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def pairs():
    return {name: make_pair(cfg, seed=0) for name, cfg in CONFIGS.items()}


def _user(cfg, steps=12, batch=2):
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, cfg.card, (steps, batch, cfg.num_user_codebooks), generator=gen)


CASES = [("moshiko-like", s) for s in SETTINGS] + [("delay2", "both-sampled"), ("dep_q16", "both-sampled")]


@pytest.mark.parametrize("name, setting", CASES)
def test_sampled_generation_equals_reference_lmgen(pairs, name, setting):
    ref, ours = pairs[name]
    user = _user(CONFIGS[name])
    settings = SETTINGS[setting]
    expected = reference_run(ref, user, settings, seed=11)
    assert _same(our_run(ours, user, settings, seed=11), expected)
    # The comparison has teeth: the reference itself gives other tokens with text and audio settings swapped.
    t_temp, t_k, a_temp, a_k = settings
    assert not _same(reference_run(ref, user, (a_temp, a_k, t_temp, t_k), seed=11), expected)


def test_top_p_reaches_its_stream(pairs):
    ref, ours = pairs["moshiko-like"]
    user = _user(CONFIGS["moshiko-like"])
    settings = (1.0, 0, 1.0, 0)
    for top_p in ((0.5, 0.0), (0.0, 0.7)):
        expected = reference_run(ref, user, settings, seed=5, top_p=top_p)
        assert _same(our_run(ours, user, settings, seed=5, top_p=top_p), expected), top_p
        assert not _same(reference_run(ref, user, settings, seed=5, top_p=top_p[::-1]), expected)
