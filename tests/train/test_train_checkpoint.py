"""Checkpoints: a process killed (SIGKILL) in the middle of a save leaves the previous checkpoint loadable and
complete; pruning keeps the newest; activation checkpointing changes neither names nor gradients."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from openmoshi.lm.config import LMConfig
from openmoshi.lm.loss import lm_loss
from openmoshi.lm.model import LMModel
from openmoshi.train.checkpoint import CheckpointManager
from openmoshi.train.distributed import Dist
from openmoshi.train.lm_data import random_sequences
from openmoshi.train.parallelize import lm_blocks, parallelize

ROOT = Path(__file__).resolve().parents[2]
CPU = Dist(0, 1, 0, torch.device("cpu"))

# Saves step 1, then starts saving step 2 with a writer that stalls half-way (after some files are written)
# and announces it: the test kills the process there.
SCRIPT = textwrap.dedent("""
    import sys, time
    import torch
    import torch.distributed.checkpoint.filesystem as fs
    from openmoshi.train.checkpoint import CheckpointManager
    from openmoshi.train.distributed import Dist

    folder, marker = sys.argv[1], sys.argv[2]
    d = Dist(0, 1, 0, torch.device("cpu"))
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    mgr = CheckpointManager(folder, d)
    mgr.save(1, {"m": model}, {"m": (model, opt)}, {"data": {"position": 1}})
    with torch.no_grad():
        model.weight.add_(1.0)
    real = fs.FileSystemWriter.write_data

    def stalled(self, plan, planner):
        out = real(self, plan, planner)  # the data files are on disk...
        open(marker, "w").close()
        time.sleep(600)  # ...and the process dies before the metadata and the rename
        return out

    fs.FileSystemWriter.write_data = stalled
    mgr.save(2, {"m": model}, {"m": (model, opt)}, {"data": {"position": 2}})
""")


def test_kill_during_save_leaves_the_last_good_checkpoint(tmp_path):
    folder, marker = tmp_path / "ckpt", tmp_path / "stalled"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(folder), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, "the saving process ended early"
            assert time.monotonic() < deadline, "the save never reached its stall"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (folder / ".step_00000002.partial").is_dir()  # the interrupted save, never renamed
    mgr = CheckpointManager(folder, CPU)
    assert [s for s, _ in mgr.checkpoints()] == [1]
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    expected = model.weight.detach().clone()
    opt = torch.optim.AdamW(model.parameters())
    with torch.no_grad():
        model.weight.zero_()
    loaded = mgr.load(mgr.latest(), {"m": model}, {"m": (model, opt)})
    assert loaded.step == 1 and loaded.rank_state["data"] == {"position": 1}
    assert not torch.equal(model.weight, expected)  # step 1's weights (after one AdamW step), not zeros...
    assert model.weight.abs().sum() > 0 and (model.weight - expected).abs().max() < 0.01  # ...one small step on
    assert opt.state[model.weight]["step"] == 1
    # the next save removes the leftover and prunes to `keep`
    for step in (3, 4, 5):
        mgr.save(step, {"m": model}, {"m": (model, opt)}, {})
    assert not (folder / ".step_00000002.partial").exists()
    assert [s for s, _ in mgr.checkpoints()] == [4, 5]


def test_activation_checkpointing_keeps_names_and_gradients():
    cfg = LMConfig.tiny(num_layers=2, depformer_num_layers=1)
    torch.manual_seed(0)
    plain = LMModel(cfg)
    torch.manual_seed(0)
    ac = LMModel(cfg)
    parallelize(ac, lm_blocks(ac), activation_checkpointing=True)
    assert list(ac.state_dict()) == list(plain.state_dict())
    codes = random_sequences(cfg, 2, 8, seed=0)
    for m in (plain, ac):
        lm_loss(m(codes), codes).total.backward()
    for (name, p), q in zip(plain.named_parameters(), ac.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
