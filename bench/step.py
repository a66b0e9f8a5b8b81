"""Where the time of one duplex step goes: `DuplexSession.step` at batch B, split into its parts.

For each batch size (`--batch 1 2 4`) and torch thread count (`--threads 1 2`): a session of B active
conversations (random user audio), `--warmup` steps, then `--steps` timed steps. Each step is split into
Mimi's encode of the user's frame, the temporal transformer (`LMModel.forward_temporal`), the depth transformer
(`DepthTransformer.generate`, the 8 codebooks with their sampling), Mimi's decode, and the rest (sampling of the
text token, the token ring, masks). Timers wrap those four calls (perf_counter; no profiler overhead).
Reported: the median of each part and the step's median / p99 / max, against the 80 ms frame.

The model: `--nano` (nanomoshi's architecture, random weights), `--model FOLDER`, and `--lm KEY=VALUE ...` /
`--mimi SECTION.KEY=VALUE ...` to measure a variant of nano (e.g. `--lm num_layers=4 depformer_num_layers=1`).
Run: nice -n 10 .venv/bin/python bench/step.py --nano [--batch 1 2 4] [--threads 1 2] [--steps 60] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FRAME_MS = 80.0
PARTS = ("encode", "temporal", "depth", "decode")


def parse_overrides(items: list[str]) -> dict:
    """KEY=VALUE (JSON values) -> dict; SECTION.KEY=VALUE -> nested."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        *sections, leaf = key.split(".")
        node = out
        for s in sections:
            node = node.setdefault(s, {})
        node[leaf] = parsed
    return out


def measure(models, batch: int, threads: int, steps: int, warmup: int) -> dict:
    import torch

    from openmoshi.inference.session import DuplexSession

    torch.set_num_threads(threads)
    mimi, lm = models.mimi, models.lm
    times: dict[str, list[float]] = {p: [] for p in PARTS}
    originals = []

    def timed(obj, name: str, part: str) -> None:
        fn = getattr(obj, name)
        originals.append((obj, name))

        def call(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            times[part].append(time.perf_counter() - t)
            return out

        setattr(obj, name, call)

    timed(mimi, "encode", "encode")
    timed(mimi, "decode", "decode")
    timed(lm, "forward_temporal", "temporal")
    timed(lm.depformer, "generate", "depth")
    gen = torch.Generator().manual_seed(0)
    totals = []
    try:
        with DuplexSession(mimi, lm, batch, seed=0) as session:
            for i in range(warmup + steps):
                pcm = 0.1 * torch.randn(batch, 1, session.frame_size, generator=gen)
                if i == warmup:
                    for v in times.values():
                        v.clear()
                t = time.perf_counter()
                session.step(pcm)
                if i >= warmup:
                    totals.append(time.perf_counter() - t)
    finally:
        for obj, name in originals:
            delattr(obj, name)  # the instance attribute; the class's method shows through again
    ms = sorted(1000 * t for t in totals)
    parts = {p: round(1000 * statistics.median(v), 2) for p, v in times.items() if v}
    median = statistics.median(ms)
    parts["other"] = round(median - sum(parts.values()), 2)
    return {"batch": batch, "threads": threads, "steps": steps, "parts_median_ms": parts,
            "step_ms": {"median": round(median, 2), "p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
                        "max": round(ms[-1], 2)}}


def markdown(rows: list[dict]) -> str:
    out = ["| batch | threads | encode | temporal | depth | decode | other | step median / p99 / max (ms) |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p, s = r["parts_median_ms"], r["step_ms"]
        out.append(f"| {r['batch']} | {r['threads']} | {p.get('encode', 0):.1f} | {p['temporal']:.1f} | "
                   f"{p['depth']:.1f} | {p.get('decode', 0):.1f} | {p['other']:.1f} | "
                   f"{s['median']:.1f} / {s['p99']:.1f} / {s['max']:.1f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--nano", action="store_true", help="nanomoshi's architecture with random weights")
    model.add_argument("--model", default=None, metavar="FOLDER", help="a model folder in Kyutai's layout")
    parser.add_argument("--lm", nargs="*", default=[], metavar="KEY=VALUE", help="with --nano: LMConfig fields")
    parser.add_argument("--mimi", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                        help="with --nano: codec config.json overrides, e.g. transformer.num_layers=1")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args()
    from openmoshi.commands.common import configure_threading_env

    configure_threading_env()
    import torch

    from openmoshi.inference.models import load_models, resolve_model_files

    torch.set_num_interop_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.nano:
            from openmoshi.testing.nano_model import build_nano_repo

            folder = build_nano_repo(Path(tmp) / "nano", lm_overrides=parse_overrides(args.lm),
                                     mimi_overrides=parse_overrides(args.mimi))
        else:
            folder = Path(args.model)
        models = load_models(resolve_model_files(folder), "cpu")
    rows = []
    for threads in args.threads:
        for batch in args.batch:
            row = measure(models, batch, threads, args.steps, args.warmup)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
