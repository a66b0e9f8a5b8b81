"""The training forward agrees with the inference path: teacher-forced logits equal the generator's (fp32, 1e-4).

`LMModel.forward(codes)` (one batch pass over the whole [B, K, T] grid) against the streaming path over the same
tokens, one 80 ms frame at a time: the temporal transformer's KV cache (a ring: T is longer than the context
window) and the depth transformer's per-step cache, with every "sampled" token forced to the teacher's. Two
drivers: `LMModel.frame_step` fed the delayed grid directly, and `LMGenerator` (its own token ring, delays,
user-code writes and, optionally, the precomputed first step of `start`) with its sampler replaced by one that
returns the teacher's tokens. The index arithmetic of the delays is written out here, independently of
lm/delays.py: forward position t of stream k is step t + delays[k] of the stream.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shared LM test helpers
from lm_testutils import one_thread  # noqa: E402

from openmoshi.inference import generator as generator_module  # noqa: E402
from openmoshi.inference.generator import LMGenerator  # noqa: E402
from openmoshi.inference.sampling import SamplingConfig  # noqa: E402
from openmoshi.lm.config import LMConfig  # noqa: E402
from openmoshi.lm.model import LMModel  # noqa: E402
from openmoshi.nn.streaming import streaming  # noqa: E402

_one_thread = pytest.fixture(autouse=True)(one_thread)
ATOL = 1e-4  # fp32; the two paths differ only in summation order (measured: < 1e-6)
T = 11  # frames: longer than the context window below, so the streaming KV ring wraps

CONFIGS = {
    # moshiko's layout: acoustic delay 1, dep_q 8 of n_q 16 (the user's 8 codebooks are input only)
    "delay1": LMConfig.tiny(context=6),
    # acoustic delay 2, fewer generated codebooks than Moshi's side (dep_q 4 < 8 < n_q 16)
    "delay2_depq4": LMConfig.tiny(dep_q=4, acoustic_delay=2, context=6),
    # every audio stream generated (dep_q == n_q): no user codes at all
    "delay1_all_generated": LMConfig.tiny(dep_q=16, context=6),
}


def _model(cfg: LMConfig) -> LMModel:
    torch.manual_seed(0)
    # The default (training) init: logits of order 1. (Weights scaled up 3x give logits of order 400, where
    # fp32 summation-order differences reach 1e-2: in float64 the two paths then still agree to 1e-13.)
    return LMModel(cfg).eval()


def _codes(cfg: LMConfig, B: int = 2, seed: int = 1) -> torch.Tensor:
    """Random codes [B, K, T]; some user-stream codes are -1 (no input), as in a text-only stretch."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, cfg.card, (B, cfg.num_streams, T), generator=g)
    codes[:, 0] = torch.randint(0, cfg.text_card, (B, T), generator=g)
    if cfg.num_user_codebooks:
        codes[1, cfg.dep_q + 1:, 3:5] = -1
    return codes


def _delayed(model: LMModel, codes: torch.Tensor) -> torch.Tensor:
    """The token each stream holds at step s ([B, K, T]): codes[k, s - delays[k]], or the initial token."""
    cfg = model.cfg
    initial = model.initial_tokens()
    out = initial.view(1, -1, 1).repeat(codes.shape[0], 1, codes.shape[2])
    for k, d in enumerate(cfg.delays):
        out[:, k, d:] = codes[:, k, : T - d]
    return out


class _Recorder:
    """Streamed logits on the step grid: text [B, T, text_card], audio [B, dep_q, T, card]."""

    def __init__(self, model: LMModel, B: int) -> None:
        cfg = model.cfg
        self.text = torch.full((B, T, cfg.text_card), float("nan"))
        self.audio = torch.full((B, cfg.dep_q, T, cfg.card), float("nan"))

    def compare(self, model: LMModel, out) -> int:
        """Assert forward logits at every valid position equal the streamed ones; returns how many were checked."""
        cfg, checked = model.cfg, 0
        assert not self.text.isnan().any() and not self.audio.isnan().any(), "a step's logits were never seen"
        for k in range(cfg.dep_q + 1):
            d = cfg.delays[k]
            mask = out.text_mask[:, 0] if k == 0 else out.audio_mask[:, k - 1]  # [B, T]
            fwd = out.text_logits[:, 0] if k == 0 else out.audio_logits[:, k - 1]  # [B, T, card]
            streamed = self.text if k == 0 else self.audio[:, k - 1]
            # A target exists for positions t whose step t + d is inside the run (no -1 in Moshi's streams here).
            assert mask[:, : T - d].all() and not mask[:, T - d:].any(), f"stream {k}: mask"
            torch.testing.assert_close(fwd[:, : T - d], streamed[:, d:], atol=ATOL, rtol=0,
                                       msg=lambda m, k=k: f"stream {k}: {m}")
            checked += mask.sum().item()
        return checked


@pytest.mark.parametrize("name", list(CONFIGS))
def test_frame_step_logits_equal_forward(name):
    cfg = CONFIGS[name]
    model = _model(cfg)
    codes = _codes(cfg)
    B, K = codes.shape[:2]
    with torch.no_grad():
        out = model(codes)
    delayed = _delayed(model, codes)
    # Step s reads the previous step's tokens (the initial tokens at s = 0) and predicts the tokens of step s.
    inputs = torch.cat([model.initial_tokens().view(1, K, 1).expand(B, K, 1), delayed[:, :, :-1]], dim=2)
    rec = _Recorder(model, B)
    with torch.no_grad(), streaming(model.transformer, B):
        depth_cache = model.depformer.new_cache(B)
        for s in range(T):
            calls = []

            def sample_text(logits, s=s):
                rec.text[:, s] = logits
                return delayed[:, 0, s]

            def sample_audio(logits, s=s, calls=calls):
                k = len(calls)
                calls.append(k)
                rec.audio[:, k, s] = logits
                return delayed[:, 1 + k, s]

            text, audio = model.frame_step(inputs[:, :, s:s + 1], sample_text, sample_audio, depth_cache)
            assert len(calls) == cfg.dep_q
            assert torch.equal(text, delayed[:, 0, s]) and torch.equal(audio, delayed[:, 1:cfg.dep_q + 1, s])
    checked = rec.compare(model, out)
    assert checked == B * sum(T - d for d in cfg.delays[: cfg.dep_q + 1])
    # The logits move from step to step by far more than the tolerance: not a constant being compared.
    assert (rec.text[:, 1:] - rec.text[:, :-1]).abs().amax() > 1000 * ATOL
    assert (rec.audio[:, :, 1:] - rec.audio[:, :, :-1]).abs().amax() > 1000 * ATOL


class _ForcedSampler:
    """Stands in for the generator's `sample_rows`: the calls of one step come in the order text, codebook 0, ...,
    codebook dep_q - 1; each returns the teacher's token of that stream at that step and records the logits."""

    def __init__(self, rec: _Recorder, delayed: torch.Tensor, dep_q: int) -> None:
        self.rec, self.delayed, self.per_step, self.calls = rec, delayed, dep_q + 1, 0

    def __call__(self, logits, rows, keys):
        s, k = divmod(self.calls, self.per_step)
        self.calls += 1
        if k == 0:
            self.rec.text[:, s] = logits
        else:
            self.rec.audio[:, k - 1, s] = logits
        return self.delayed[:, k, s].clone()


@pytest.mark.parametrize("first", ["step", "start"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_generator_logits_equal_forward(name, first, monkeypatch):
    cfg = CONFIGS[name]
    model = _model(cfg)
    codes = _codes(cfg, seed=2)
    B, dq = codes.shape[0], cfg.dep_q
    with torch.no_grad():
        out = model(codes)
    rec = _Recorder(model, B)
    forced = _ForcedSampler(rec, _delayed(model, codes), dq)
    monkeypatch.setattr(generator_module, "sample_rows", forced)
    # The generator's step s reads the user's codes given at step s (written delays[k] slots ahead): they are
    # the forward grid's frame s - 1, and the frame given at step 0 is never read (so: random there).
    user = torch.cat([torch.randint(0, cfg.card, (B, cfg.n_q - dq, 1)), codes[:, dq + 1:, :-1]], dim=2)
    frames = []
    greedy = SamplingConfig(greedy=True)
    with LMGenerator(model, B, text_sampling=greedy, audio_sampling=greedy, seed=0) as gen:
        for s in range(T):
            user_codes = user[:, :, s] if cfg.num_user_codebooks else None
            if s == 0 and first == "start":
                o = gen.start(range(B))  # the precomputed first temporal step, then the depth transformer
                o = None if (o.text == -2).all() else o
            else:
                o = gen.step(user_codes)
            frames.append(o)
    assert forced.calls == T * (dq + 1)
    rec.compare(model, out)
    # The generator's output, undelayed by its own ring, is the teacher's grid: frame s - max_delay at step s.
    m = cfg.max_delay
    assert all(o is None for o in frames[:m])
    for s in range(m, T):
        assert torch.equal(frames[s].text, codes[:, 0, s - m]), s
        assert torch.equal(frames[s].audio, codes[:, 1:dq + 1, s - m]), s
