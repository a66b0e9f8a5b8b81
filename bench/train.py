"""Training throughput: the LM trainer (frames and tokens per second, the share of the CPU's measured matmul peak
it reaches, peak memory) for the `tiny` preset and a ~120M-parameter config, and the codec trainer (seconds of
audio trained per second, peak memory) for its `tiny` and `mimi` presets.

Each configuration runs in its own process (so peak memory is its own): `train_lm` on synthetic data for a few
steps (the real trainer: AdamW, clipping, the loss, metrics), 1 thread by default, optionally 2 processes
(gloo, FSDP2). Frames/s is the median of the per-step figures after the warm-up steps. The matmul peak is a
1024 x 1024 fp32 matmul timed on the same threads; the training FLOPs are 6 x (linear weights) per frame (the
depth transformer's per-step weights each see one position per frame), ignoring attention and embeddings.

The codec runs `train_codec` on a synthetic recording (tones and noise; speed does not depend on content) with
the preset's losses, discriminator included; `mimi` at a batch of 2 x 1 s so that a step fits here (its preset
trains 64 x 12 s on GPUs); the figure is the median `audio_s_per_s` the trainer logs after the first step.

    .venv/bin/python bench/train.py [--configs tiny 120m codec-tiny codec-mimi] [--steps 8] [--procs 1 2]
                                    [--threads 1]
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


# codec configs: (preset, overrides); measured by `codec_child`
CODEC_CONFIGS = {
    "codec-tiny": ("tiny", ["train.batch_size=4", "loss.phases.adversarial_start=0"]),
    "codec-mimi": ("mimi", ["train.batch_size=2", "data.segment_seconds=1.0", "loss.phases.adversarial_start=0"]),
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


def codec_child(name: str, steps: int, threads: int, out: str) -> None:
    """One codec measurement in this process: `train_codec` for `steps` steps on a synthetic recording."""
    import numpy as np
    import soundfile as sf
    import torch

    torch.set_num_threads(threads)
    from openmoshi.train.codec_config import CODEC_TRAIN_PRESETS, CodecTrainConfig
    from openmoshi.train.codec_trainer import train_codec
    from openmoshi.train.config import resolve_config

    folder = Path(out + ".data")
    folder.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(24000 * 20) / 24000
    wav = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(t))) + 0.05 * rng.standard_normal(t.size)
    sf.write(folder / "clip.wav", wav.astype(np.float32), 24000)
    preset, overrides = CODEC_CONFIGS[name]
    sets = [f"data.source={folder}", f"train.steps={steps}", "train.log_every=1", "train.val_every=0",
            "train.checkpoint_every=0", *overrides]
    cfg = resolve_config(CodecTrainConfig, preset, CODEC_TRAIN_PRESETS, sets)
    run = Path(out + ".run")
    train_codec(cfg, run, progress=False, log=lambda _m: None)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["audio_s_per_s"] for r in lines if "audio_s_per_s" in r]
    from openmoshi.train.codec_trainer import build_mimi

    n = sum(p.numel() for p in build_mimi(cfg, torch.device("cpu")).parameters())
    Path(out).write_text(json.dumps({"params": n, "audio_s_per_s": statistics.median(rates[1:] or rates)}))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(f"{out}.rss0").write_text(str(rss))
    shutil.rmtree(folder, ignore_errors=True)


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
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS) + ["codec-tiny"],
                        choices=list(CONFIGS) + list(CODEC_CONFIGS))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--procs", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (codec_child if args.child in CODEC_CONFIGS else child)(args.child, args.steps, args.threads, args.out)
        return
    peak = matmul_gflops(args.threads)
    print(f"matmul peak (1024^2 fp32, {args.threads} thread(s)): {peak:.1f} GFLOP/s")
    print("| config | parameters | processes | frames/s | tokens/s | share of matmul peak | peak memory per process |")
    print("|---|---|---|---|---|---|---|")
    lm_configs = [c for c in args.configs if c in CONFIGS]
    for name in lm_configs:
        for procs in args.procs:
            r = measure(name, args.steps, args.threads, procs)
            share = 6 * r["linear"] * r["frames_per_s"] / 1e9 / (peak * procs)
            print(f"| {name} | {r['params'] / 1e6:.1f}M | {procs} | {r['frames_per_s']:.1f} | "
                  f"{r['tokens_per_s']:.0f} | {100 * share:.0f}% | {r['rss_mb']:.0f} MB |", flush=True)

    codec_configs = [c for c in args.configs if c in CODEC_CONFIGS]
    if codec_configs:
        print("\n| codec config | parameters | audio seconds trained per second | peak memory |")
        print("|---|---|---|---|")
    for name in codec_configs:
        r = measure(name, args.steps, args.threads, 1)
        print(f"| {name} | {r['params'] / 1e6:.1f}M | {r['audio_s_per_s']:.3f} | {r['rss_mb']:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
