"""A reset or a join in one row of a DuplexSession leaves every other row exactly as it would have been.

Each test runs the same frames twice, with and without the event in one row, and compares the other rows step
by step (tokens equal, audio equal): a reset that restarts more rows than asked, or the first-frame priming (the
extra generator step of a new conversation) run on every row, changes them.
"""

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
    return load_models(resolve_model_files(str(build_tiny_repo(tmp_path_factory.mktemp("tiny"), seed=2))), "cpu")


def run(models, frames, batch, events=None, start_all=True):
    """Session outputs per step: (text [B], audio [B, dep_q], pcm [B, 1, fs]); events: step -> (method, rows)."""
    outs = []
    with DuplexSession(models.mimi, models.lm, batch, text_sampling=GREEDY, audio_sampling=GREEDY,
                       start_all=start_all) as s:
        for t, frame in enumerate(frames):
            for method, rows in (events or {}).get(t, []):
                getattr(s, method)(rows)
            o = s.step(frame)
            outs.append((o.text.clone(), o.audio.clone(), o.pcm.clone()))
    return outs


def frames_for(models, steps, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(steps, batch, 1, models.mimi.frame_size, generator=gen)


def assert_rows_equal(a, b, rows, steps):
    for t in steps:
        for r in rows:
            assert torch.equal(a[t][0][r], b[t][0][r]) and torch.equal(a[t][1][r], b[t][1][r]), (t, r)
            assert torch.equal(a[t][2][r], b[t][2][r]), (t, r)


def test_reset_of_one_row_leaves_the_others_untouched(models):
    frames = frames_for(models, 12, 3, seed=5)
    plain = run(models, frames, 3)
    reset = run(models, frames, 3, events={5: [("reset", 1)]})
    assert_rows_equal(reset, plain, rows=[0, 2], steps=range(12))
    assert_rows_equal(reset, plain, rows=[1], steps=range(5))
    # the reset row did restart: from step 5 it is a new conversation over frames 5..11
    alone = run(models, frames[5:, 1:2], 1)
    for t in range(5, 12):
        assert torch.equal(reset[t][1][1], alone[t - 5][1][0]) and torch.equal(reset[t][0][1], alone[t - 5][0][0])
    assert not all(torch.equal(reset[t][1][1], plain[t][1][1]) for t in range(5, 12))


def test_a_row_joining_mid_conversation_leaves_the_others_untouched(models):
    frames = frames_for(models, 10, 2, seed=6)
    alone = run(models, frames[:, :1], 1)
    joined = run(models, frames, 2, events={0: [("join", 0)], 4: [("join", 1)]}, start_all=False)
    for t in range(10):
        assert torch.equal(joined[t][0][0], alone[t][0][0]) and torch.equal(joined[t][1][0], alone[t][1][0]), t
        torch.testing.assert_close(joined[t][2][0], alone[t][2][0], atol=1e-5, rtol=1e-4)  # batch 2 vs 1 GEMMs
    plain = run(models, frames, 2, events={0: [("join", 0)]}, start_all=False)  # same batch, row 1 never joins
    assert_rows_equal(joined, plain, rows=[0], steps=range(10))
    assert (joined[3][1][1] == -2).all() and (joined[4][1][1] >= 0).all()  # row 1 starts (max_delay 1) at 4
