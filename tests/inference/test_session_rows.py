"""DuplexSession per conversation: sampling and seeds per row, joining without a second batch step, snapshots."""

import pytest
import torch
from runtime_testutils import build_tiny_repo, single_thread  # noqa: F401

from openmoshi.inference.models import load_models, resolve_model_files
from openmoshi.inference.sampling import SamplingConfig
from openmoshi.inference.session import DuplexSession

GREEDY = SamplingConfig(greedy=True)
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = build_tiny_repo(tmp_path_factory.mktemp("tiny_moshi_rows"), seed=2)
    return load_models(resolve_model_files(str(folder)), "cpu")


def user_audio(steps, batch, seed, frame_size):
    return 0.3 * torch.randn(steps, batch, 1, frame_size, generator=torch.Generator().manual_seed(seed))


def row(o, r):
    return o.text[r].clone(), o.audio[r].clone(), o.pcm[r].clone()


def assert_same(a, b, where):
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), where
    torch.testing.assert_close(a[2], b[2], atol=1e-5, rtol=1e-4)


def alone(models, frames, **join):
    """One conversation in a one-row session over frames [T, 1, fs]."""
    with DuplexSession(models.mimi, models.lm, 1, start_all=False) as s:
        s.join(0, **join)
        return [row(s.step(f[None]), 0) for f in frames]


def test_seeded_conversation_is_the_same_alone_and_beside_others(models):
    fs, T = models.mimi.frame_size, 12
    frames = user_audio(T, 3, 8, fs)
    mine = dict(text_sampling=SamplingConfig(0.9, 20), audio_sampling=SamplingConfig(1.0, 50), seed=2024)
    outs = []
    with DuplexSession(models.mimi, models.lm, 3, seed=1, start_all=False) as s:
        s.join([0, 2])
        for t in range(T):
            if t == 2:
                s.join(1, **mine)
            if t == 5:
                s.leave(0)
            if t == 7:
                s.join(0, text_sampling=GREEDY, seed=3)
                s.join(2)  # a neighbour restarts with a fresh seed of the session's sequence
            outs.append(row(s.step(frames[t]), 1))
    ref = alone(models, frames[2:, 1], **mine)
    for t in range(2, T):
        assert_same(outs[t], ref[t - 2], t)
    other = alone(models, frames[2:, 1], **{**mine, "seed": 2025})
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(ref, other, strict=True))


def test_a_join_costs_no_batch_step(models):
    """Every session step runs the temporal transformer once, joins included; a join runs it not at all."""
    fs = models.mimi.frame_size
    frames = user_audio(8, 3, 9, fs)
    calls = []
    handle = models.lm.transformer.register_forward_hook(lambda *_: calls.append(1))
    try:
        with DuplexSession(models.mimi, models.lm, 3, text_sampling=GREEDY, audio_sampling=GREEDY,
                           start_all=False) as s:
            base = len(calls)  # set-up: the first step of every conversation, computed once
            per_step = []
            for t in range(8):
                before = len(calls)
                if t in (0, 3, 5):
                    s.join({0: [0], 3: [1, 2], 5: [0]}[t])
                    assert len(calls) == before, t
                out = s.step(frames[t])
                per_step.append(len(calls) - before)
                if t == 3:
                    joined = row(out, 1)
    finally:
        handle.remove()
    assert base <= 2 and per_step == [1] * 8
    # The joining row's frame equals a fresh one-row session's (greedy); the others' are covered by test_session.
    with DuplexSession(models.mimi, models.lm, 1, text_sampling=GREEDY, audio_sampling=GREEDY) as s:
        assert_same(joined, row(s.step(frames[3, 1:2]), 0), "join")


def test_snapshot_and_restore_in_place_and_in_another_row(models):
    fs, T = models.mimi.frame_size, 12
    frames = user_audio(T, 3, 10, fs)
    with DuplexSession(models.mimi, models.lm, 3, seed=4) as s:
        for t in range(5):
            s.step(frames[t])
        snap = s.get_state(0)
        later = [row(s.step(frames[t]), 0) for t in range(5, T)]
        s.set_state(0, snap)
        again = [row(s.step(frames[t]), 0) for t in range(5, T)]
        for t, (a, b) in enumerate(zip(later, again, strict=True)):
            assert_same(a, b, t)
        # Park row 0's conversation, let a new one use the slot, resume it in row 2 beside active rows.
        s.leave(0)
        s.join(0, seed=8)
        s.set_state(2, snap)
        moved = []
        for t in range(5, T):
            f = frames[t].clone()
            f[2] = frames[t, 0]
            moved.append(row(s.step(f), 2))
        assert s.active_rows == [0, 1, 2]
    for t, (a, b) in enumerate(zip(later, moved, strict=True)):
        assert_same(a, b, t)


def test_snapshot_of_a_row_that_just_joined(models):
    """Between join and the first frame: the first step's output travels with the snapshot."""
    fs = models.mimi.frame_size
    frames = user_audio(4, 2, 11, fs)
    with DuplexSession(models.mimi, models.lm, 2, text_sampling=GREEDY, audio_sampling=GREEDY,
                       start_all=False) as s:
        s.join(0)
        snap = s.get_state(0)
        s.leave(0)
        s.set_state(1, snap)
        outs = [s.step(frames[t]) for t in range(4)]
    assert outs[0].prime is not None
    ref = alone(models, frames[:, 1], text_sampling=GREEDY, audio_sampling=GREEDY)
    for t in range(4):
        assert_same(row(outs[t], 1), ref[t], t)
        assert (outs[t].text[0] == -2) and outs[t].pcm[0].abs().sum() == 0


def test_steps_and_joins_make_no_host_sync(models, monkeypatch):
    """Session steps, joins (per-row settings), leaves and snapshots never read a tensor value on the host."""
    fs = models.mimi.frame_size
    frames = user_audio(7, 2, 12, fs)
    with DuplexSession(models.mimi, models.lm, 2, seed=0, start_all=False) as s:
        s.join(0)
        s.step(frames[0])  # outside the guard: lazily built caches (RoPE frequencies)

        def sync(*_args, **_kwargs):
            raise AssertionError("host sync in the session")

        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "nonzero", "cpu", "numpy"):
            monkeypatch.setattr(torch.Tensor, name, sync)
        for t in range(1, 7):
            if t == 2:
                s.join(1, text_sampling=SamplingConfig(0.5, 5, 0.9), seed=7)
            if t == 4:
                snap = s.get_state(1)
                s.leave(1)
                s.set_state(1, snap)
            out = s.step(frames[t])
        monkeypatch.undo()
    assert (out.audio >= 0).all()


def test_seed_sequence_and_row_settings(models):
    """Row r of a session starts with seed + r; later joins without a seed continue the sequence; a one-row
    session's conversation has the seed itself (as `openmoshi chat --seed`)."""
    with DuplexSession(models.mimi, models.lm, 3, seed=42) as s:
        assert [s.generator.row_settings(r).text_seed for r in range(3)] == [42, 43, 44]
        s.join(1)
        s.join(2, text_sampling=GREEDY, seed=7, audio_seed=8)
        assert s.generator.row_settings(1).audio_seed == 45
        settings = s.generator.row_settings(2)
        assert (settings.text, settings.text_seed, settings.audio_seed) == (GREEDY, 7, 8)
        assert settings.audio == SamplingConfig.audio_default()
        snap = s.get_state(2).to("cpu")
        s.set_state(0, snap)
        assert s.generator.row_settings(0) == settings
    fs = models.mimi.frame_size
    frames = user_audio(4, 1, 13, fs)
    with DuplexSession(models.mimi, models.lm, 1, seed=42) as s:
        assert s.generator.row_settings(0).text_seed == 42
        outs = [row(s.step(f), 0) for f in frames]
    for a, b in zip(outs, alone(models, frames[:, 0], seed=42), strict=True):
        assert_same(a, b, "seed")


def test_snapshot_restored_in_another_session(models):
    """A conversation parked on the CPU moves to a new session of another batch size, into another row, beside
    running conversations, and goes on exactly as it would have (sampled, its own seed)."""
    fs, T = models.mimi.frame_size, 10
    frames = user_audio(T, 2, 12, fs)
    with DuplexSession(models.mimi, models.lm, 2, seed=6) as s:
        for t in range(4):
            s.step(frames[t])
        snap = s.get_state(1).to("cpu")
        later = [row(s.step(frames[t]), 1) for t in range(4, T)]
    with DuplexSession(models.mimi, models.lm, 3, seed=30) as s:
        for t in range(3):  # the other rows have their own history, longer than the snapshot's in places
            s.step(user_audio(1, 3, 40 + t, fs)[0])
        s.set_state(0, snap)
        moved = []
        for t in range(4, T):
            f = user_audio(1, 3, 50 + t, fs)[0]
            f[0] = frames[t, 1]
            moved.append(row(s.step(f), 0))
    for t, (a, b) in enumerate(zip(later, moved, strict=True)):
        assert_same(a, b, t)
