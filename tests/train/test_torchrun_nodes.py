"""`torchrun ... -m openmoshi train lm` on CPU (gloo), the real command line in subprocesses: one launcher with
2 processes, and two "nodes" on this machine (two launchers, `--nnodes 2`, a c10d rendezvous on localhost).

Both finish with status 0 and write the planned steps with finite losses; their losses equal each other and a
single process accumulating the same 2 micro-batches (the same global batch). Tolerance: 1e-5 relative (fp32;
gradients reduced in another order), as tests/train/test_lm_distributed.py.
"""

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
sys.path.insert(0, str(HERE.parent))
from lm_train_testutils import SMALL, read_metrics  # noqa: E402

from openmoshi import cli  # noqa: E402

STEPS = 3
TIMEOUT_S = 240  # per launch; a run takes ~10 s of CPU (mostly importing torch), more on a busy machine
TRAIN = ["train", "lm", "tiny", "--data", "synthetic", "--steps", str(STEPS), "--no-progress", "--threads", "1",
         "--set", SMALL, "--set", "train.batch_size=4", "--set", "train.log_every=1", "--set", "train.val_every=0",
         "--set", "train.checkpoint_every=0"]
KEYS = ("loss", "text_loss", "audio_loss", "grad_norm")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(launcher_args: list[str], run: Path, log: Path) -> subprocess.Popen:
    """One torchrun launcher (its own process group, so that a failure can end it and its workers)."""
    env = {**os.environ, "NO_TORCH_COMPILE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    argv = [sys.executable, "-m", "torch.distributed.run", "--max-restarts", "0", "--monitor-interval", "0.2",
            *launcher_args, "-m", "openmoshi", *TRAIN, "--out", str(run)]
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_all(procs: list[subprocess.Popen], logs: list[Path]) -> None:
    """Wait for every launcher; on a timeout or a failure end them all (their process groups) and show the logs."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    codes = [p.returncode for p in procs]
    if any(c != 0 for c in codes):
        tails = "\n".join(f"--- {log.name} ---\n" + log.read_text(errors="replace")[-3000:] for log in logs)
        pytest.fail(f"torchrun exit statuses {codes} (-9: killed after {TIMEOUT_S} s)\n{tails}")


def _curve(run: Path) -> list[dict]:
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), rows
    for r in rows:
        assert all(math.isfinite(r[k]) for k in KEYS), r
    assert (run / "export" / "model.safetensors").is_file()
    return rows


def _same(a: list[dict], b: list[dict], what: str) -> None:
    for ra, rb in zip(a, b, strict=True):
        for key in KEYS:
            assert rb[key] == pytest.approx(ra[key], rel=1e-5), (what, ra["step"], key)


def test_torchrun_two_processes_and_two_nodes_equal_one_process(tmp_path):
    # Both launches start at once (their imports overlap), the single-process reference runs meanwhile.
    # (a) one launcher, 2 processes
    procs = tmp_path / "procs"
    log_a = tmp_path / "procs.log"
    launchers = [_torchrun(["--standalone", "--nproc-per-node", "2"], procs, log_a)]
    # (b) two launchers of 1 process each, meeting at a c10d rendezvous on localhost (the first hosts its store)
    nodes = tmp_path / "nodes"
    endpoint = f"127.0.0.1:{_free_port()}"
    logs = [log_a, tmp_path / "node0.log", tmp_path / "node1.log"]
    for i, log in enumerate(logs[1:]):
        args = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                "--rdzv-id", "nodes-test", "--rdzv-conf", f"is_host={'true' if i == 0 else 'false'}",
                "--local-addr", "127.0.0.1"]
        launchers.append(_torchrun(args, nodes, log))
    try:
        # (c) one process accumulating 2 micro-batches of the same global batch (in this process: no launcher)
        single = tmp_path / "single"
        assert cli.main([*TRAIN, "--out", str(single), "--set", "train.grad_accum=2"]) == 0
    finally:
        _wait_all(launchers, logs)
    a, b, c = _curve(procs), _curve(nodes), _curve(single)
    assert "done: step 3" in log_a.read_text()
    assert sum("done: step 3" in log.read_text() for log in logs[1:]) == 1  # rank 0 reports, on one node
    _same(a, b, "2 processes vs 2 nodes")
    _same(c, a, "1 process x 2 micro-batches vs 2 processes")
    assert a[0]["loss"] != a[-1]["loss"]  # it trained: the compared curve is not flat
