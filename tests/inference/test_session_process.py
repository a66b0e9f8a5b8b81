"""ProcessSession: a DuplexSession in a child process gives the same frames, surfaces the child's errors, and never
leaves a child behind (closed, killed, or failed)."""

import os
import signal

import pytest
import torch

from openmoshi.inference.models import load_models, resolve_model_files
from openmoshi.inference.sampling import SamplingConfig
from openmoshi.inference.session import DuplexSession
from openmoshi.inference.session_process import ModelProcessError, ProcessSession
from openmoshi.testing.server_model import build_server_repo


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = build_server_repo(tmp_path_factory.mktemp("tiny_process"), seed=4)
    return load_models(resolve_model_files(str(folder)), "cpu")


def script(session, frames):
    """20 steps over a batch of 3 with joins, leaves, a rejoin, per-row settings and silent steps."""
    outs = []
    session.join([0, 2], seed=5)
    for t in range(frames.shape[0]):
        if t == 3:
            session.join(1, text_sampling=SamplingConfig(0.8, 10), audio_sampling=SamplingConfig(1.1, 30), seed=77,
                         audio_seed=78)
        if t == 7:
            session.leave(0)
        if t == 12:
            session.join(0, text_sampling=SamplingConfig(greedy=True), seed=3)
            session.leave(2)
        out = session.step(None if t in (5, 13) else frames[t])
        outs.append(out)
    return outs


def test_same_frames_as_in_process(models):
    frames = 0.3 * torch.randn(20, 3, 1, models.mimi.frame_size, generator=torch.Generator().manual_seed(0))
    with DuplexSession(models.mimi, models.lm, 3, seed=9, start_all=False) as s:
        ref = script(s, frames)
    with ProcessSession(models.mimi, models.lm, 3, seed=9, start_all=False, threads=1) as p:
        assert p.device == torch.device("cpu") and p.alive
        got = script(p, frames)
        assert p.active_rows == [0, 1] and p.free_rows() == [2]
        last, kept = got[-1], got[-1].pcm.clone()
        p.step(frames[0])
        assert torch.equal(last.pcm, kept), "outputs are the caller's: the next step does not overwrite them"
    assert sum(int((o.text >= 0).sum()) for o in ref) > 20, "the script produced tokens"
    for t, (a, b) in enumerate(zip(got, ref, strict=True)):
        assert torch.equal(a.text, b.text) and torch.equal(a.audio, b.audio), t
        assert torch.equal(a.user_codes, b.user_codes), t
        assert torch.equal(a.pcm, b.pcm), t
        assert (a.prime is None) == (b.prime is None), t
        if a.prime is not None:
            assert torch.equal(a.prime.text, b.prime.text) and torch.equal(a.prime.audio, b.prime.audio), t


def test_child_errors_are_raised_and_the_session_goes_on(models):
    fs = models.mimi.frame_size
    frame = 0.3 * torch.randn(2, 1, fs, generator=torch.Generator().manual_seed(1))
    with DuplexSession(models.mimi, models.lm, 2, seed=2) as s:
        ref = [s.step(frame) for _ in range(3)]
    with ProcessSession(models.mimi, models.lm, 2, seed=2, threads=1) as p:
        with pytest.raises(IndexError, match="row 5 out of range for a batch of 2") as info:
            p.join(5)  # raised by the child's session
        assert any("raised in the model process" in note for note in info.value.__notes__)
        with pytest.raises(ValueError, match=r"user audio must have shape \[2, 1, 1920\], got \[1, 1, 1920\]"):
            p.step(frame[:1])
        assert p.alive
        got = [p.step(frame) for _ in range(3)]  # nothing moved: the same frames as without the errors
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a.text, b.text) and torch.equal(a.pcm, b.pcm)


def test_a_dead_child_is_an_error_not_a_hang(models):
    p = ProcessSession(models.mimi, models.lm, 1, threads=1, timeout=60)
    p.step(None)
    pid = p.pid
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ModelProcessError, match=r"model process died during 'step' \(exit code -9\)"):
        p.step(None)
    assert not p.alive and not process_exists(pid)
    with pytest.raises(ModelProcessError, match="closed"):
        p.join(0)
    p.close()  # idempotent after a failure


def test_close_leaves_no_child(models):
    p = ProcessSession(models.mimi, models.lm, 2, threads=1)
    pid = p.pid
    assert process_exists(pid)
    p.close()
    assert not process_exists(pid) and p._proc.exitcode == 0  # exited on its own, reaped
    p.close()
    with pytest.raises(ModelProcessError, match="closed"):
        p.step(None)


def test_a_child_that_cannot_start_is_a_clear_error(models):
    from openmoshi.lm.model import LMModel
    from openmoshi.testing.kyutai import tiny_lm_config

    other = LMModel(tiny_lm_config(card=models.lm.cfg.card + 1))  # codebooks that do not match this Mimi's
    with pytest.raises(ModelProcessError, match="could not start: ValueError: Mimi codebooks have"):
        ProcessSession(models.mimi, other, 1, threads=1)


def process_exists(pid: int) -> bool:
    """True while `pid` is a live process or an unreaped zombie of ours."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return True if f.read() else False
    except FileNotFoundError:
        return False


def test_an_interpreter_exiting_with_a_session_open_does_not_hang(tmp_path):
    """The child ignores SIGTERM (the parent drains first), so multiprocessing's own exit hook could not stop it:
    the session's exit hook kills it. The script exits promptly and leaves no child."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "open_session.py"
    script.write_text(
        "import torch\n"
        "from openmoshi.inference.models import load_models, resolve_model_files\n"
        "from openmoshi.inference.session_process import ProcessSession\n"
        "from openmoshi.testing.server_model import build_server_repo\n"
        "if __name__ == '__main__':\n"
        "    torch.set_num_threads(1)\n"
        f"    m = load_models(resolve_model_files(str(build_server_repo({str(tmp_path / 'model')!r}))), 'cpu')\n"
        "    s = ProcessSession(m.mimi, m.lm, 1, threads=1)\n"
        "    s.step(None)\n"
        "    print(s.pid, flush=True)\n"  # exits without close()
    )
    root = Path(__file__).resolve().parents[2]
    env = {**__import__("os").environ, "NO_TORCH_COMPILE": "1", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not process_exists(int(done.stdout.split()[-1]))
