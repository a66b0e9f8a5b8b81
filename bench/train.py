"""Training throughput of the LM trainer: frames (and tokens) per second, the share of the CPU's measured matmul
peak it reaches, and peak memory, for the `tiny` preset and a ~120M-parameter config.

Each configuration runs in its own process (so peak memory is its own): `train_lm` on synthetic data for a few
steps (the real trainer: AdamW, clipping, the loss, metrics), 1 thread by default, optionally 2 processes
(gloo, FSDP2). Frames/s is the median of the per-step figures after the warm-up steps. The matmul peak is a
1024 x 1024 fp32 matmul timed on the same threads; the training FLOPs are 6 x (linear weights) per frame (the
depth transformer's per-step weights each see one position per frame), ignoring attention and embeddings.

    .venv/bin/python bench/train.py [--configs tiny 120m] [--steps 8] [--procs 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "tiny": ["train.batch_size=4", "data.seq_frames=16"],
    # ~120M parameters: temporal 640 wide x 8 layers, depth 256 wide x 2 layers, the released vocabularies
    "120m": ["model.preset=moshiko_7b",
             "model.overrides={dim: 640, num_layers: 8, num_heads: 10, hidden: 1728, depformer_dim: 256, "
             "depformer_num_layers: 2, depformer_num_heads: 4, depformer_hidden: 704, context: 256}",
             "train.batch_size=2", "data.seq_frames=64"],
}


def matmul_gflops(threads: int, n: int = 1024, reps: int = 10) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def linear_weights(model) -> int:
    """Weights that multiply activations (every linear / per-step linear), not embedding tables."""
    return sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n)


def child(name: str, steps: int, threads: int, out: str) -> None:
    """One measurement (this process, or each rank under WORLD_SIZE)."""
    import torch

    torch.set_num_threads(threads)
    from openmoshi.train.config import resolve_config
    from openmoshi.train.distributed import shutdown
    from openmoshi.train.lm_config import LM_TRAIN_PRESETS, LMTrainConfig
    from openmoshi.train.lm_trainer import build_model, resolve_model_source, train_lm

    sets = ["data.synthetic=true", f"train.steps={steps}", "train.log_every=1", "train.val_every=0",
            "train.checkpoint_every=0", *CONFIGS[name]]
    cfg = resolve_config(LMTrainConfig, "tiny", LM_TRAIN_PRESETS, sets)
    source = resolve_model_source(cfg)
    model = build_model(cfg, source, torch.device("cpu"))
    params, linear = sum(p.numel() for p in model.parameters()), linear_weights(model)
    del model
    run = Path(out + ".run")  # the same folder on every rank
    try:
        train_lm(cfg, run, progress=False, log=lambda _m: None)
    finally:
        shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        fps = statistics.median(r["frames_per_s"] for r in lines[2:] or lines)
        Path(out).write_text(json.dumps({"params": params, "linear": linear, "frames_per_s": fps,
                                         "tokens_per_s": fps * source.cfg.num_streams}))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(f"{out}.rss{os.environ.get('RANK', '0')}").write_text(str(rss))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(name: str, steps: int, threads: int, procs: int) -> dict:
    out = tempfile.mktemp(prefix="bench-train-", suffix=".json")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--child", name, "--steps", str(steps), "--threads", str(threads),
           "--out", out]
    port = free_port()
    running = []
    for rank in range(procs):
        e = dict(env)
        if procs > 1:
            e.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(procs),
                     LOCAL_RANK=str(rank))
        running.append(subprocess.Popen(cmd, env=e))
    for p in running:
        if p.wait():
            raise SystemExit(f"{name}: the benchmark process failed")
    result = json.loads(Path(out).read_text())
    result["rss_mb"] = max(float(Path(f"{out}.rss{r}").read_text()) for r in range(procs))
    shutil.rmtree(out + ".run", ignore_errors=True)
    for f in [out, *(f"{out}.rss{r}" for r in range(procs))]:
        Path(f).unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--procs", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.threads, args.out)
        return
    peak = matmul_gflops(args.threads)
    print(f"matmul peak (1024^2 fp32, {args.threads} thread(s)): {peak:.1f} GFLOP/s")
    print("| config | parameters | processes | frames/s | tokens/s | share of matmul peak | peak memory per process |")
    print("|---|---|---|---|---|---|---|")
    for name in args.configs:
        for procs in args.procs:
            r = measure(name, args.steps, args.threads, procs)
            share = 6 * r["linear"] * r["frames_per_s"] / 1e9 / (peak * procs)
            print(f"| {name} | {r['params'] / 1e6:.1f}M | {procs} | {r['frames_per_s']:.1f} | "
                  f"{r['tokens_per_s']:.0f} | {100 * share:.0f}% | {r['rss_mb']:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
