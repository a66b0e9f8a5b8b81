"""The duplex session: start of a conversation, silence, reset, rows joining and leaving, flat memory."""

import pytest
import torch
from runtime_testutils import build_tiny_repo, single_thread, tiny_lm_config  # noqa: F401

from openmoshi.inference.generator import LMGenerator
from openmoshi.inference.models import load_models, resolve_model_files
from openmoshi.inference.sampling import SamplingConfig
from openmoshi.inference.session import DuplexSession

GREEDY = SamplingConfig(greedy=True)
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = build_tiny_repo(tmp_path_factory.mktemp("tiny_moshi"), seed=1)
    return load_models(resolve_model_files(str(folder)), "cpu")


def session(models, batch_size=1, **kw):
    return DuplexSession(models.mimi, models.lm, batch_size, text_sampling=GREEDY, audio_sampling=GREEDY, **kw)


def user_audio(steps, batch=1, seed=0, frame_size=32):
    gen = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(steps, batch, 1, frame_size, generator=gen)


def run_single(models, frames):
    """Outputs of a one-row session over frames [T, 1, 1, fs]: lists of (text, audio, pcm) per step."""
    outs = []
    with session(models) as s:
        for f in frames:
            o = s.step(f)
            outs.append((o.text[0].clone(), o.audio[0].clone(), o.pcm[0].clone()))
    return outs


def test_first_frame_is_fed_twice_and_heard(models):
    fs, max_delay = models.mimi.frame_size, models.lm.cfg.max_delay
    frames = user_audio(6, frame_size=fs)
    with session(models) as s:
        first = s.step(frames[0])
        assert first.prime is not None
        assert s.step(frames[1]).prime is None
    # The same two generator steps on the first frame's codes, done by hand.
    codes = models.mimi.encode(frames[0], num_codebooks=8)[:, :, 0]
    assert torch.equal(first.user_codes, codes)
    with LMGenerator(models.lm, 1, GREEDY, GREEDY) as bare:
        bare.step(codes)
        ref = bare.step(codes)
    assert torch.equal(first.text, ref.text) and torch.equal(first.audio, ref.audio)
    # moshiko-like delays (max 1): Moshi's first frame comes out with the user's first frame
    assert max_delay == 1 and (first.audio >= 0).all() and first.pcm.abs().sum() > 0
    # The first frame changes what follows (the generator did not drop it).
    other = frames.clone()
    other[0] = -other[0]
    a, b = run_single(models, frames), run_single(models, other)
    assert any(not torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def test_delay_two_starts_with_silence(tmp_path):
    m = load_models(resolve_model_files(str(build_tiny_repo(tmp_path, lm_cfg=tiny_lm_config(acoustic_delay=2)))))
    with DuplexSession(m.mimi, m.lm, 1, text_sampling=GREEDY, audio_sampling=GREEDY) as s:
        first = s.step(None)
        assert (first.text == -2).all() and (first.audio == -2).all() and first.pcm.abs().sum() == 0
        second = s.step(None)
        assert (second.audio >= 0).all() and second.pcm.abs().sum() > 0


def test_silence_is_zero_audio(models):
    fs = models.mimi.frame_size
    zeros = torch.zeros(4, 1, 1, fs)
    with session(models) as s:
        none_outs = [s.step(None) for _ in range(4)]
    zero_outs = run_single(models, zeros)
    for o, (text, audio, pcm) in zip(none_outs, zero_outs, strict=True):
        assert torch.equal(o.text[0], text) and torch.equal(o.audio[0], audio) and torch.equal(o.pcm[0], pcm)


def test_rows_join_and_leave_without_disturbing_others(models):
    """Each row of a batch, joining/leaving at its own steps, equals a one-row session over its own frames."""
    fs, T, B = models.mimi.frame_size, 14, 3
    frames = user_audio(T, B, seed=3, frame_size=fs)
    joins = {0: [0, 2], 4: [1], 6: [2]}  # row 2 joins at 0, leaves at 4, joins again (new conversation) at 6
    leaves = {4: [2], 11: [0]}
    outs = {r: [] for r in range(B)}  # per row: list of (conversation id, step output)
    conv = {r: -1 for r in range(B)}
    with session(models, B, start_all=False) as s:
        for t in range(T):
            if t in leaves:
                s.leave(leaves[t])
                for r in leaves[t]:
                    conv[r] = -1
            if t in joins:
                s.join(joins[t])
                for r in joins[t]:
                    conv[r] = t
            o = s.step(frames[t])
            for r in range(B):
                if conv[r] >= 0:
                    outs[r].append((conv[r], t, o.text[r].clone(), o.audio[r].clone(), o.pcm[r].clone()))
                else:
                    assert o.text[r] == -2 and (o.audio[r] == -2).all() and o.pcm[r].abs().sum() == 0
    checked = 0
    for r in range(B):
        for start in {c for c, *_ in outs[r]}:
            mine = [x for x in outs[r] if x[0] == start]
            steps = [t for _, t, *_ in mine]
            alone = run_single(models, frames[steps][:, r : r + 1])
            for (_, t, text, audio, pcm), (text1, audio1, pcm1) in zip(mine, alone, strict=True):
                assert torch.equal(text, text1) and torch.equal(audio, audio1), (r, start, t)
                torch.testing.assert_close(pcm, pcm1, atol=1e-5, rtol=1e-4)
                checked += 1
    assert checked == 11 + 10 + 4 + 8


def test_reset_restarts_a_conversation(models):
    fs = models.mimi.frame_size
    frames = user_audio(10, 2, seed=5, frame_size=fs)
    with session(models, 2) as s:
        for t in range(5):
            s.step(frames[t])
        s.reset(1)
        late = [s.step(frames[t]) for t in range(5, 10)]
    with session(models, 2) as s:  # the same run without the reset: row 0 must not notice it
        plain = [s.step(frames[t]) for t in range(10)][5:]
    for o, p in zip(late, plain, strict=True):
        assert torch.equal(o.text[0], p.text[0]) and torch.equal(o.audio[0], p.audio[0])
        assert torch.equal(o.pcm[0], p.pcm[0])
    alone = run_single(models, frames[5:10, 1:2])
    for o, (text, audio, pcm) in zip(late, alone, strict=True):
        assert torch.equal(o.text[1], text) and torch.equal(o.audio[1], audio)
        torch.testing.assert_close(o.pcm[1], pcm, atol=1e-5, rtol=1e-4)


def test_memory_is_flat_far_past_the_context(tmp_path):
    """10x the LM's context window (and far past Mimi's): the state tensors never grow."""
    cfg = tiny_lm_config(context=6)
    m = load_models(resolve_model_files(str(build_tiny_repo(tmp_path, lm_cfg=cfg))))
    fs = m.mimi.frame_size
    gen = torch.Generator().manual_seed(0)
    sizes = []
    with DuplexSession(m.mimi, m.lm, 2, seed=0) as s:
        for _t in range(10 * cfg.context):
            o = s.step(0.3 * torch.randn(2, 1, fs, generator=gen))
            sizes.append(s.state_bytes())
        assert (o.audio >= 0).all() and torch.isfinite(o.pcm).all()
    assert sizes[0] > 0
    assert len(set(sizes[2:])) == 1, sorted(set(sizes))


def test_bad_input_shape(models):
    with session(models, 2) as s, pytest.raises(ValueError, match="user audio must have shape"):
        s.step(torch.zeros(1, 1, models.mimi.frame_size))
    with session(models, 2) as s, pytest.raises(IndexError, match="row 2 out of range"):
        s.join(2)


def test_real_mimi_size():
    """The released Mimi's shapes (frame 1920, 2048 entries) with a tiny LM: a few frames run end to end."""
    from openmoshi.codec.mimi import Mimi
    from openmoshi.lm.model import LMModel

    mimi = Mimi().eval()
    lm = LMModel(tiny_lm_config(card=2048)).eval()
    with DuplexSession(mimi, lm, 1, seed=0) as s:
        assert s.frame_size == 1920
        outs = [s.step(0.1 * torch.randn(1, 1, 1920)) for _ in range(3)]
    for o in outs:
        assert o.pcm.shape == (1, 1, 1920) and torch.isfinite(o.pcm).all()
        assert o.user_codes.shape == (1, 8) and ((0 <= o.user_codes) & (o.user_codes < 2048)).all()
