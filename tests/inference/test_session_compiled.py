"""DuplexSession(compile=True): the compiled step gives the eager step's results, rows join and leave, no
recompilation per frame.

Dynamo's tracing (fullgraph, static shapes, the streaming state read and written in place) is what can break, so
these tests compile with the `aot_eager` backend: the same graphs, run by eager kernels (inductor's C++
compilation takes minutes even for a tiny model: too slow for the suite). Inductor's numerics against eager are
checked at nanomoshi's size by `bench/step.py --compile both` (same tokens, max pcm difference).
"""

import pytest
import torch
from runtime_testutils import build_tiny_repo, single_thread  # noqa: F401
from torch._dynamo.utils import counters

from openmoshi.inference.models import load_models, resolve_model_files
from openmoshi.inference.sampling import SamplingConfig
from openmoshi.inference.session import DuplexSession

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_repo(tmp_path_factory.mktemp("tiny_moshi_compiled"), seed=3)


def load(folder):
    return load_models(resolve_model_files(str(folder)), "cpu")


def frames(steps, batch, frame_size, seed=5):
    return 0.3 * torch.randn(steps, batch, 1, frame_size, generator=torch.Generator().manual_seed(seed))


def script(session, pcm, events):
    """Step `session` over pcm [T, B, 1, fs], applying events {t: (method, rows, kwargs)} before step t."""
    outs = []
    for t in range(pcm.shape[0]):
        for name, rows, kw in events.get(t, []):
            getattr(session, name)(rows, **kw)
        o = session.step(pcm[t])
        outs.append((o.text.clone(), o.audio.clone(), o.user_codes.clone(), o.pcm.clone()))
    return outs


def assert_same(eager, compiled, atol=1e-5):
    assert len(eager) == len(compiled)
    for t, (a, b) in enumerate(zip(eager, compiled, strict=True)):
        assert torch.equal(a[0], b[0]), f"text differs at step {t}"
        assert torch.equal(a[1], b[1]), f"audio tokens differ at step {t}"
        assert torch.equal(a[2], b[2]), f"user codes differ at step {t}"
        torch.testing.assert_close(a[3], b[3], atol=atol, rtol=1e-4, msg=f"pcm differs at step {t}")


def graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


@pytest.mark.parametrize("batch", [1, 2])
def test_compiled_step_equals_eager_with_rows_joining_and_leaving(folder, batch):
    torch._dynamo.reset()
    counters.clear()
    eager_models, compiled_models = load(folder), load(folder)
    fs = eager_models.mimi.frame_size
    pcm = frames(10, batch, fs)
    sampled = dict(text_sampling=SamplingConfig(0.9, 20), audio_sampling=SamplingConfig(1.0, 50))
    last = batch - 1
    events = {3: [("leave", [last], {})], 5: [("join", [last], {"seed": 77})],
              7: [("join", [0], {"seed": 5})]}  # a reset of a running row (the only row at batch 1)
    with DuplexSession(eager_models.mimi, eager_models.lm, batch, seed=11, **sampled) as s:
        eager = script(s, pcm, events)
    with DuplexSession(compiled_models.mimi, compiled_models.lm, batch, seed=11, start_all=False, **sampled) as s:
        s.compile_step(backend="aot_eager")
        first = graphs()
        assert first >= 3  # encode, the generator's core, decode
        s.join(range(batch))
        compiled = script(s, pcm, events)
    assert_same(eager, compiled)
    assert graphs() == first, "a frame, a join or a leave recompiled the step"
    assert not any("recompile" in k or "limit" in k for k in counters["frames"])


def test_compile_keeps_running_conversations_and_snapshots(folder):
    """compile_step in the middle of conversations leaves them as they were; snapshots move rows."""
    torch._dynamo.reset()
    eager_models, compiled_models = load(folder), load(folder)
    fs = eager_models.mimi.frame_size
    pcm = frames(8, 2, fs, seed=9)
    outs = {}
    for name, models in (("eager", eager_models), ("compiled", compiled_models)):
        with DuplexSession(models.mimi, models.lm, 2, seed=3) as s:
            first = script(s, pcm[:3], {})
            if name == "compiled":
                s.compile_step(backend="aot_eager")
            snap = s.get_state(0)
            s.leave(0)
            rest = script(s, pcm[3:5], {})
            s.set_state(0, snap)  # row 0 continues from where it was parked
            rest += script(s, pcm[5:], {})
            outs[name] = first + rest
    assert_same(outs["eager"], outs["compiled"])
