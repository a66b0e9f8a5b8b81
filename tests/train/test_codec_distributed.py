"""The codec trainer under 2 processes (gloo on CPU, FSDP2 over Mimi and the discriminator): the same losses
and exported weights as 1 process on the same global batch.

Settings that draw per rank are off (quantizer dropout, the unquantized share, dead-code replacement, codebooks
initialised from data), and feature matching (normalised by each rank's own mean) too: what remains is
averaged exactly across ranks (gradients by FSDP2, codebook statistics and balancer norms by all-reduce).
Tolerance 1e-4 relative (fp32, reductions in another order)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from openmoshi.train.codec_config import CODEC_TRAIN_PRESETS, CodecTrainConfig
from openmoshi.train.codec_trainer import train_codec
from openmoshi.train.config import resolve_config

SETS = ["train.steps=3", "train.batch_size=4", "train.log_every=1", "train.val_every=0", "train.checkpoint_every=3",
        "data.segment_seconds=0.1", "quantizer.dropout_prob=0.0", "quantizer.dead_code_ratio=0.0",
        "quantizer.init_from_data=false", "loss.unquantized_share=0.0", "loss.reconstruction.feature_matching=0.0",
        "loss.phases.adversarial_start=1"]


def _config(data: str) -> CodecTrainConfig:
    return resolve_config(CodecTrainConfig, "tiny", CODEC_TRAIN_PRESETS, [*SETS, f"data.source={data}"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run: str, data: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from openmoshi.train.distributed import shutdown

    try:
        train_codec(_config(data), run, progress=False, log=lambda _m: None)
    finally:
        shutdown()


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_equal_one(tmp_path) -> None:
    audio, rate = sf.read("openmoshi/assets/example.wav", dtype="float32")
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "a.wav", audio[:3 * rate], rate)
    data = str(tmp_path / "audio")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two"), data), nprocs=2, join=True)
    train_codec(_config(data), tmp_path / "one", progress=False, log=lambda _m: None)
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        for key in ("mel", "commitment", "discriminator", "generator"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4), (ra["step"], key)
    assert "adversarial" in a[1] and b[1]["adversarial"] == pytest.approx(a[1]["adversarial"], rel=1e-4)
    wa = load_file(tmp_path / "one" / "export" / "mimi.safetensors")
    wb = load_file(tmp_path / "two" / "export" / "mimi.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=1e-4, rtol=1e-4, msg=name)
