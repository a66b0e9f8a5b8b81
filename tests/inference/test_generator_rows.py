"""LMGenerator per row: sampling settings and seeds per conversation, starting a row without a batch step,
snapshots of a conversation restored in place or in another row."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))  # shared LM test helpers
from lm_testutils import one_thread  # noqa: E402

from openmoshi.inference.generator import LMGenerator  # noqa: E402
from openmoshi.inference.sampling import SamplingConfig  # noqa: E402
from openmoshi.lm.config import LMConfig  # noqa: E402
from openmoshi.lm.model import LMModel  # noqa: E402

GREEDY = SamplingConfig(greedy=True)
_one_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def model():
    return _model(LMConfig.tiny())


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    m = LMModel(cfg).eval()
    with torch.no_grad():  # sharper logits: greedy near-ties become unlikely
        for p in m.parameters():
            p.mul_(3.0)
    return m


def _user(T, B, cfg, seed=1):
    return torch.randint(0, cfg.card, (T, B, cfg.num_user_codebooks), generator=torch.Generator().manual_seed(seed))


def _frame(o, r):
    return None if o is None else torch.cat([o.text[r:r + 1], o.audio[r]])


def _alone(model, user, **start):
    """One conversation in a one-row generator: user [T, n_user] -> per step [1 + dep_q] (None: nothing)."""
    with LMGenerator(model, 1) as gen:
        gen.start(0, **start)
        return [_frame(gen.step(u[None]), 0) for u in user]


class _CountTemporal:
    """Counts the temporal transformer's calls (a forward hook)."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.transformer.register_forward_hook(self._hook)

    def _hook(self, *_args):
        self.calls += 1


def test_start_equals_a_first_step_on_those_rows(model):
    """start(rows) = reset + set_row_sampling + a step active on those rows only; no temporal-transformer call."""
    cfg = model.cfg
    user = _user(12, 3, cfg)
    runs = []
    for use_start in (False, True):
        outs = []
        with LMGenerator(model, 3, seed=0) as gen:
            for t in range(12):
                if t == 4:
                    if use_start:
                        count = _CountTemporal(model)
                        first = gen.start([0, 2], seed=77, audio_seed=5)
                        count.handle.remove()
                        assert count.calls == 0
                        assert (first.text == -2).all() and (first.audio == -2).all()  # max_delay 1
                    else:
                        mask = torch.tensor([True, False, True])
                        gen.reset(mask)
                        gen.set_row_sampling([0, 2], seed=77, audio_seed=5)
                        gen.step(user[t], mask)
                outs.append(gen.step(user[t]))
        runs.append(outs)
    for t in range(1, 12):
        for r in range(3):
            assert torch.equal(_frame(runs[0][t], r), _frame(runs[1][t], r)), (t, r)


def test_start_output_without_delay():
    """With max_delay 0 the first step's tokens are output at once."""
    model = _model(LMConfig.tiny(acoustic_delay=0))
    with LMGenerator(model, 2, GREEDY, GREEDY) as gen:
        first = gen.start([1])
        assert (first.text[0] == -2) and (first.audio[0] == -2).all() and (first.audio[1] >= 0).all()
    with LMGenerator(model, 1, GREEDY, GREEDY) as gen:
        ref = gen.step(torch.zeros(1, model.cfg.num_user_codebooks, dtype=torch.long))
    assert torch.equal(first.text[1:], ref.text) and torch.equal(first.audio[1:], ref.audio)


def test_seeded_conversation_is_the_same_alone_and_beside_others(model):
    """A sampled conversation with a fixed seed: identical tokens alone and in a batch where others join,
    leave and pause, with their own settings."""
    cfg = model.cfg
    T, B = 16, 3
    user = _user(T, B, cfg, seed=4)
    mine = dict(seed=1234, text=SamplingConfig(0.9, 10), audio=SamplingConfig(1.0, 100, 0.9))
    outs = []
    with LMGenerator(model, B, seed=9) as gen:
        gen.start([0, 1])  # others: the generator's defaults, seeds from its sequence
        for t in range(T):
            if t == 3:
                gen.start(2, **mine)  # ours joins at step 3
            if t == 6:
                gen.start(0, text=GREEDY, seed=5)  # a neighbour restarts
            active = torch.tensor([t % 4 != 1, t < 10, True])  # neighbours pause and leave
            outs.append(_frame(gen.step(user[t], active), 2))
    alone = _alone(model, user[3:, 2], **mine)
    assert all(a is not None for a in alone[1:])
    for t in range(4, T):
        assert torch.equal(outs[t], alone[t - 3]), t
    other_seed = _alone(model, user[3:, 2], **{**mine, "seed": 1235})
    assert any(not torch.equal(a, b) for a, b in zip(alone[1:], other_seed[1:], strict=True))


def test_greedy_row_beside_sampled_rows_equals_greedy_alone(model):
    cfg = model.cfg
    user = _user(10, 3, cfg, seed=5)
    with LMGenerator(model, 3, seed=3) as gen:  # sampled defaults
        gen.set_row_sampling(1, text=GREEDY, audio=GREEDY)
        outs = [gen.step(user[t]) for t in range(10)]
    with LMGenerator(model, 1, GREEDY, GREEDY) as gen:
        greedy = [gen.step(user[t, 1:2]) for t in range(10)]
    for t in range(1, 10):
        assert torch.equal(_frame(outs[t], 1), _frame(greedy[t], 0)), t
    assert any(not torch.equal(_frame(outs[t], 0), _frame(outs[t], 2)) for t in range(1, 10))


def test_reset_replays_the_rows_random_stream(model):
    cfg = model.cfg
    user = _user(8, 2, cfg, seed=6)
    with LMGenerator(model, 2, seed=1) as gen:
        gen.set_row_sampling([0, 1], seed=42)
        first = [_frame(gen.step(user[t]), 1) for t in range(8)]
        gen.reset(torch.tensor([False, True]))
        again = [_frame(gen.step(user[t]), 1) for t in range(8)]
        assert gen.row_settings(1).text_seed == 42 and gen.row_settings(1).audio_seed == 42
        with pytest.raises(IndexError, match="row 2 out of range"):
            gen.set_row_sampling(2, seed=1)
    for t in range(1, 8):
        assert torch.equal(first[t], again[t]), t


def test_snapshot_restores_a_conversation_in_place_and_in_another_row(model):
    cfg = model.cfg
    T = 14
    user = _user(T, 3, cfg, seed=7)
    with LMGenerator(model, 3, seed=2) as gen:
        gen.set_row_sampling(1, text=SamplingConfig(0.8, 0, 0.95), seed=11)
        for t in range(6):
            gen.step(user[t])
        snap = gen.get_state(1)
        later = [_frame(gen.step(user[t]), 1) for t in range(6, T)]
        gen.set_state(1, snap)  # back in time, same row
        again = [_frame(gen.step(user[t]), 1) for t in range(6, T)]
        assert all(torch.equal(a, b) for a, b in zip(later, again, strict=True))
        # Into row 2, while row 1 starts something else and row 0 goes on: the same conversation.
        gen.set_state(2, snap)
        gen.start(1, seed=99)
        moved = []
        for t in range(6, T):
            codes = user[t].clone()
            codes[2] = user[t, 1]
            moved.append(_frame(gen.step(codes), 2))
        assert gen.row_settings(2) == snap.settings
    for t, (a, b) in enumerate(zip(later, moved, strict=True)):
        assert torch.equal(a, b), t
    with LMGenerator(model, 2) as gen, pytest.raises(ValueError, match="token ring"):
        bad = snap.__class__(snap.transformer, snap.tokens[:, :1], snap.offset, snap.settings, snap.steps)
        gen.set_state(0, bad)


def test_seeds_select_different_draws_from_the_first_step_on(model):
    """Eight rows started together from the same (shared) first-step logits, one seed each: their first text
    tokens and audio frames differ between seeds (a row's noise that ignored its seed would give eight equal
    draws: with a flat-ish distribution over 32 ids, all equal by chance has probability < 1e-9), and a seed
    repeats its draws."""
    cfg = model.cfg
    flat = SamplingConfig(temperature=1.0, top_k=0)
    user = _user(2, 8, cfg, seed=3)[:, :1].expand(-1, 8, -1)  # every row hears the same

    def first_frames(seeds):
        with LMGenerator(model, 8, text_sampling=flat, audio_sampling=flat) as gen:
            for r, s in enumerate(seeds):
                gen.start(r, seed=s)
            out, t = None, 0
            while out is None:  # the first frame out: the start's text and semantic draws, step 1's acoustic ones
                out = gen.step(user[t])
                t += 1
        return torch.cat([out.text[:, None], out.audio], dim=1)

    frames = first_frames(range(8))
    assert len(set(frames[:, 0].tolist())) > 1, frames[:, 0]
    assert len({tuple(f) for f in frames[:, 1:].tolist()}) > 1
    assert torch.equal(first_frames(range(8)), frames)
    assert torch.equal(first_frames([5] * 8), first_frames([5] * 8)[:1].expand(8, -1))
