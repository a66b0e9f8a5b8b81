"""The trainer under 2 processes (gloo on CPU, FSDP2): the same losses and weights as 1 process on the same
global batch; its sharded checkpoint resumed by 1 process (DCP reshards on load, the data position carries
over) continues the same loss curve.

Tolerance: 1e-5 relative on losses and 1e-5 absolute on weights (fp32; gradients reduced in another order)."""

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_train_testutils import read_metrics, tiny_config  # noqa: E402

from openmoshi.train.lm_trainer import train_lm  # noqa: E402

SETS = ["train.batch_size=4", "train.checkpoint_every=2", "loss.text_mask_prob=0.5", "schedule.kind=constant",
        "schedule.warmup_steps=0", "train.activation_checkpointing=true", "train.val_every=4", "train.val_batches=1",
        "loss.user_text_weight=0.5"]  # the training-only head is sharded and resharded like the model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from openmoshi.train.distributed import shutdown

    try:
        train_lm(tiny_config(*SETS, "train.grad_accum=1", "train.steps=4"), run, progress=False,
                 log=lambda _m: None)
    finally:
        shutdown()


def test_two_processes_equal_one_with_accumulation(tmp_path):
    two = tmp_path / "two"
    mp.spawn(_worker, args=(2, free_port(), str(two)), nprocs=2, join=True)
    one = tmp_path / "one"
    train_lm(tiny_config(*SETS, "train.grad_accum=2", "train.steps=6"), one, progress=False, log=lambda _m: None)
    a, b = read_metrics(one), read_metrics(two)
    assert [r["step"] for r in a] == [1, 2, 3, 4, 5, 6] and [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=False):
        for key in ("loss", "text_loss", "audio_loss", "user_text_loss", "grad_norm"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5), (ra["step"], key)
    va, vb = read_metrics(one, "val"), read_metrics(two, "val")
    assert vb[0]["loss"] == pytest.approx(va[0]["loss"], rel=1e-5)
    assert vb[0]["user_text_loss"] == pytest.approx(va[0]["user_text_loss"], rel=1e-5)
    # the 2-rank sharded step-4 checkpoint, resumed by one process for 2 more steps: the same curve and weights
    train_lm(tiny_config(*SETS, "train.grad_accum=2", "train.steps=6"), two, resume=True, progress=False,
             log=lambda _m: None)
    b = read_metrics(two)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a[4:], b[4:], strict=True):
        for key in ("loss", "text_loss", "audio_loss", "user_text_loss"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5), (ra["step"], key)
    wa = load_file(one / "export" / "model.safetensors")
    wb = load_file(two / "export" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-5), name
