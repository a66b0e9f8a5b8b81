"""Mimi speed and memory: ours vs Kyutai's reference (moshi 0.2.13) vs rustymimi, same weights, same run.

Every measurement runs in a fresh subprocess (so peak RSS is that implementation's alone), and the
implementations take turns (interleaved rounds) so that a change in machine load hits them all alike.
Measured:
- streaming: encode + decode of one 80 ms frame per call (batch 1, 8 codebooks), with 1 and 2 threads;
- batch: encode of 10 s of audio, and decode of its codes (2 threads);
- peak memory: ru_maxrss of the worker process (weights loaded from the same safetensors file).
Weights: the random real-size init of FACTS.md (openmoshi.testing.mimi_init, shared with the tests), in
Kyutai's published naming.

Two more implementations can join the rounds: `base` is ours from another checkout (`--base DIR`, e.g. a detached
worktree of an older commit: before/after comparisons of a change, same workers, same weights), and `compiled` is
ours with the frame step (encode + decode of one frame) under `torch.compile` (inductor; streaming only, compile
time reported apart).

    .venv/bin/python bench/codec.py [--rounds 3] [--frames 40] [--markdown] [--impls ours,base --base DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAME = 1920
IMPLS = ("ours", "reference", "rustymimi")
EXTRA_IMPLS = ("base", "compiled")  # ours from --base DIR; ours with the frame step compiled


def _make_weights(path: Path) -> None:
    sys.path.insert(0, str(ROOT))  # the repository's openmoshi (helpers shared with the tests)
    from safetensors.torch import save_file

    from openmoshi.testing.mimi_init import random_state, to_published_naming

    save_file(to_published_naming(random_state(0)), str(path))


def _audio(seconds: float):
    import torch

    gen = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(1, 1, int(seconds * 24000), generator=gen)


def _load(impl: str, weights: str):
    if impl in ("ours", "base", "compiled"):  # `base`: the same code path, imported from the --base checkout
        from openmoshi.codec.checkpoint import load_mimi

        return load_mimi(weights)
    if impl == "reference":
        from moshi.models.loaders import get_mimi

        return get_mimi(weights, device="cpu")
    import rustymimi

    return rustymimi.Tokenizer(weights)


def _stream(impl: str, model, frames: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (process) seconds per frame. CPU time is the steadier figure on a shared machine."""
    import torch

    wav = _audio(frames * FRAME / 24000 + 1)
    times, cpu = [], []
    if impl == "rustymimi":
        x = wav.numpy()
        for i in range(frames):
            t, c = time.perf_counter(), time.process_time()
            codes = model.encode_step(x[..., i * FRAME:(i + 1) * FRAME])
            model.decode_step(codes)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return times, cpu
    ours = impl in ("ours", "base", "compiled")
    if ours:
        from openmoshi.nn.streaming import streaming

        ctx = streaming(model, 1)
    else:
        ctx = model.streaming(1)

    def step(frame):
        codes = model.encode(frame, 8) if ours else model.encode(frame)
        return model.decode(codes)

    if impl == "compiled":
        try:  # the attention's static-shape mode: no data-dependent shape or host value in a step
            from openmoshi.nn.attention import set_static_shapes

            set_static_shapes(model, True)
        except ImportError:
            pass
        step = torch.compile(step, dynamic=False)
    with torch.no_grad(), ctx:
        for i in range(frames):
            t, c = time.perf_counter(), time.process_time()
            step(wav[..., i * FRAME:(i + 1) * FRAME])
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return times, cpu


def _batch(impl: str, model, reps: int) -> tuple[list[float], list[float]]:
    import numpy as np
    import torch

    wav = _audio(10.0)
    enc, dec = [], []
    for _ in range(reps):
        t = time.perf_counter()
        if impl == "rustymimi":
            model.reset()
            codes = model.encode(wav.numpy())
            t1 = time.perf_counter()
            model.decode(codes.astype(np.uint32))
        else:
            with torch.no_grad():
                codes = model.encode(wav, 8) if impl in ("ours", "base") else model.encode(wav)
                t1 = time.perf_counter()
                model.decode(codes)
        enc.append(t1 - t)
        dec.append(time.perf_counter() - t1)
    return enc, dec


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    model = _load(args.impl, args.weights)
    out: dict = {"impl": args.impl, "threads": args.threads, "task": args.task}
    if args.task == "stream":
        times, cpu = _stream(args.impl, model, args.frames + 5)  # the first 5 calls warm up
        out["ms_per_frame"] = 1000 * statistics.median(times[5:])
        out["cpu_ms_per_frame"] = 1000 * statistics.median(cpu[5:])
        out["first_frame_ms"] = 1000 * times[0]  # includes compilation for `compiled`
        if args.impl == "compiled":
            from torch._dynamo.utils import counters

            out["graphs"] = float(counters["stats"]["unique_graphs"])  # 1 = compiled once, never recompiled
    else:
        _batch(args.impl, model, 1)  # warm-up
        enc, dec = _batch(args.impl, model, args.reps)
        out["encode_10s_ms"] = 1000 * statistics.median(enc)
        out["decode_10s_ms"] = 1000 * statistics.median(dec)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def _run_worker(impl: str, task: str, threads: int, weights: Path, frames: int, reps: int,
                base: Path | None = None) -> dict:
    root = base if impl == "base" else ROOT
    env = dict(os.environ, NO_TORCH_COMPILE="1", RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               PYTHONPATH=str(root))
    cmd = [sys.executable, __file__, "--worker", impl, "--task", task, "--threads", str(threads),
           "--weights", str(weights), "--frames", str(frames), "--reps", str(reps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker {impl}/{task}/{threads} failed:\n{proc.stderr[-2000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--frames", type=int, default=40, help="timed streaming frames per worker")
    p.add_argument("--reps", type=int, default=3, help="timed batch repetitions per worker")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"among {', '.join(IMPLS + EXTRA_IMPLS)}")
    p.add_argument("--base", type=Path, default=None, help="checkout whose openmoshi the `base` impl runs")
    p.add_argument("--jobs", default="stream1,stream2,batch2", help="among stream1, stream2, batch2")
    p.add_argument("--markdown", action="store_true", help="print a markdown table for docs/benchmarks.md")
    p.add_argument("--worker", choices=IMPLS + EXTRA_IMPLS, dest="impl", help=argparse.SUPPRESS)
    p.add_argument("--task", choices=["stream", "batch"], help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    p.add_argument("--make-weights", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.impl:
        worker(args)
        return
    if args.make_weights:
        _make_weights(Path(args.make_weights))
        return
    impls = args.impls.split(",")
    unknown = sorted(set(impls) - set(IMPLS + EXTRA_IMPLS))
    if unknown:
        p.error(f"unknown implementation(s) {unknown}: expected some of {IMPLS + EXTRA_IMPLS}")
    if "base" in impls and (args.base is None or not (args.base / "openmoshi").is_dir()):
        p.error("--impls base needs --base DIR, a checkout with an openmoshi package")
    all_jobs = {"stream1": ("stream", 1), "stream2": ("stream", 2), "batch2": ("batch", 2)}
    if any(j not in all_jobs for j in args.jobs.split(",")):
        p.error(f"--jobs: expected some of {sorted(all_jobs)}, got {args.jobs!r}")
    jobs = [all_jobs[j] for j in args.jobs.split(",")]
    results: dict[tuple[str, str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "mimi.safetensors"
        # In a child process: a worker's peak RSS counts its parent's RSS at fork (Linux folds it in at exec),
        # so this process must stay small.
        subprocess.run([sys.executable, __file__, "--make-weights", str(weights)], check=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
        for r in range(args.rounds):
            for task, threads in jobs:
                for impl in impls:  # interleaved: each implementation in turn, every round
                    if impl == "compiled" and task != "stream":
                        continue
                    res = _run_worker(impl, task, threads, weights, args.frames, args.reps, args.base)
                    results.setdefault((impl, task, threads), []).append(res)
                    print(f"round {r} {impl:9s} {task} t={threads}: "
                          + ", ".join(f"{k}={v:.1f}" for k, v in res.items() if isinstance(v, float)),
                          file=sys.stderr, flush=True)
    _report(results, impls, args.markdown)


def _median(results: dict, key: tuple, field: str) -> float | None:
    rows = results.get(key)
    return statistics.median(r[field] for r in rows) if rows else None


def _paired_ratio(results: dict, other: str, key: tuple, field: str) -> str:
    """Median over rounds of other / ours within the same round: robust to load drifting between rounds."""
    ours, theirs = results.get(("ours", *key)), results.get((other, *key))
    if not ours or not theirs:
        return "-"
    return f"{statistics.median(t[field] / o[field] for o, t in zip(ours, theirs, strict=True)):.2f}x"


def _report(results: dict, impls: list[str], markdown: bool) -> None:
    rows = [
        ("streaming, 1 thread (ms / 80 ms frame)", ("stream", 1), "ms_per_frame"),
        ("streaming, 1 thread, CPU time (ms / frame)", ("stream", 1), "cpu_ms_per_frame"),
        ("streaming, 2 threads (ms / 80 ms frame)", ("stream", 2), "ms_per_frame"),
        ("batch encode 10 s, 2 threads (ms)", ("batch", 2), "encode_10s_ms"),
        ("batch decode 10 s, 2 threads (ms)", ("batch", 2), "decode_10s_ms"),
        ("first streaming frame, 1 thread (ms; with compilation for `compiled`)", ("stream", 1), "first_frame_ms"),
        ("peak RSS, streaming 2 threads (MB)", ("stream", 2), "peak_rss_mb"),
        ("peak RSS, batch 10 s (MB)", ("batch", 2), "peak_rss_mb"),
    ]
    others = [i for i in impls if i != "ours"]
    header = ["measure (medians over rounds)", *impls, *(f"{o} / ours (paired)" for o in others)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for title, (task, threads), field in rows:
        vals = {i: _median(results, (i, task, threads), field) for i in impls}
        cells = [f"{vals[i]:.1f}" if vals[i] is not None else "-" for i in impls]
        ratios = [_paired_ratio(results, o, (task, threads), field) for o in others]
        lines.append("| " + " | ".join([title, *cells, *ratios]) + " |")
    print("\n".join(lines) if markdown else "\n".join(lines).replace("|", " "))


if __name__ == "__main__":
    main()
