"""Where the time of one duplex step goes: `DuplexSession.step` at batch B, split into its parts.

For each batch size (`--batch 1 2 4`) and torch thread count (`--threads 1 2`): a session of B active
conversations (random user audio), `--warmup` steps, then `--steps` timed steps. Each step is split into
Mimi's encode of the user's frame, the LM (the temporal transformer, the text draw, the depth transformer's
codebooks and their draws: `LMGenerator.sample_step`), Mimi's decode, and the rest (the token ring, masks).
Timers wrap those three calls (perf_counter; no profiler overhead).
`--compile both` steps every model twice, eager and through torch.compile (`DuplexSession(compile=True)`,
separate copies of the weights), in turn; `--compile on` only compiled. The compile time is reported.
Reported: the median of each part and the step's median / p99 / max, against the 80 ms frame.

The models: `--nano` (nanomoshi's architecture, random weights; `--lm KEY=VALUE ...` / `--mimi
SECTION.KEY=VALUE ...` measure a variant of it, e.g. `--lm num_layers=4 depformer_num_layers=1`) and/or
`--model FOLDER ...`. Several models are stepped in turn, one step each, so that the machine's load (this
machine's 2 cores are shared) hits them alike: compare them within one run; the step's minimum is the figure
closest to an idle machine.
Run: nice -n 10 .venv/bin/python bench/step.py --nano [--model FOLDER ...] [--batch 1 2 4] [--threads 1 2]
     [--steps 60] [--json FILE]
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
PARTS = ("encode", "lm", "decode")


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


class Timed:
    """One model's session of `batch` rows with timers on the four parts of its step."""

    def __init__(self, name: str, models, batch: int, compile: bool = False) -> None:
        from openmoshi.inference.session import DuplexSession

        self.name, self.batch = name, batch
        self.times: dict[str, list[float]] = {p: [] for p in PARTS}
        self.totals: list[float] = []
        self._patched = []
        self.session = DuplexSession(models.mimi, models.lm, batch, seed=0, compile=compile)
        self.compile_s = self.session.compile_seconds
        self._wrap(self.session, "_encode_frame", "encode")
        self._wrap(self.session, "_decode_frame", "decode")
        self._wrap(self.session.generator, "_core", "lm")

    def _wrap(self, obj, name: str, part: str) -> None:
        fn, times = getattr(obj, name), self.times[part]
        self._patched.append((obj, name))

        def call(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            times.append(time.perf_counter() - t)
            return out

        setattr(obj, name, call)

    def step(self, pcm, timed: bool):
        t = time.perf_counter()
        out = self.session.step(pcm)
        if timed:
            self.totals.append(time.perf_counter() - t)
        else:
            for v in self.times.values():
                v.clear()
        return out

    def close(self) -> None:
        self.session.close()

    def result(self, threads: int) -> dict:
        ms = sorted(1000 * t for t in self.totals)
        parts = {p: round(1000 * statistics.median(v), 2) for p, v in self.times.items() if v}
        median = statistics.median(ms)
        parts["other"] = round(median - sum(parts.values()), 2)
        return {"model": self.name, "batch": self.batch, "threads": threads, "steps": len(ms),
                "compile_s": None if self.compile_s is None else round(self.compile_s, 1),
                "parts_median_ms": parts,
                "step_ms": {"min": round(ms[0], 2), "median": round(median, 2),
                            "p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2), "max": round(ms[-1], 2)}}


def measure(models: dict, batch: int, threads: int, steps: int, warmup: int) -> list[dict]:
    """Every model's session stepped in turn, step by step (the machine's load hits them alike).
    models: name -> (LoadedModels, compile)."""
    import torch

    torch.set_num_threads(threads)
    runs = []
    try:
        for name, (m, compile) in models.items():
            runs.append(Timed(name, m, batch, compile))
    except BaseException:
        for run in runs:
            run.close()
        raise
    gen = torch.Generator().manual_seed(0)
    same = {run.name: [True, 0.0] for run in runs}  # compiled runs: same tokens as eager, max |pcm difference|
    try:
        for i in range(warmup + steps):
            pcm = 0.1 * torch.randn(batch, 1, runs[0].session.frame_size, generator=gen)
            outs = {run.name: run.step(pcm, timed=i >= warmup) for run in runs}
            for name, out in outs.items():
                ref = outs.get(name.removesuffix(" compiled")) if name.endswith(" compiled") else None
                if ref is not None:
                    same[name][0] &= torch.equal(ref.text, out.text) and torch.equal(ref.audio, out.audio)
                    same[name][1] = max(same[name][1], float((ref.pcm - out.pcm).abs().max()))
    finally:
        for run in runs:
            run.close()
    results = [run.result(threads) for run in runs]
    for r in results:
        if r["model"].endswith(" compiled") and r["model"].removesuffix(" compiled") in same:
            r["same_tokens_as_eager"], r["max_pcm_diff"] = same[r["model"]][0], same[r["model"]][1]
    return results


def markdown(rows: list[dict]) -> str:
    out = ["| model | batch | threads | encode | lm | decode | other | step min / median / p99 / max (ms) | "
           "compile (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p, s = r["parts_median_ms"], r["step_ms"]
        c = "-" if r["compile_s"] is None else f"{r['compile_s']:.0f}"
        out.append(f"| {r['model']} | {r['batch']} | {r['threads']} | {p.get('encode', 0):.1f} | "
                   f"{p['lm']:.1f} | {p.get('decode', 0):.1f} | {p['other']:.1f} | "
                   f"{s['min']:.1f} / {s['median']:.1f} / {s['p99']:.1f} / {s['max']:.1f} | {c} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nano", action="store_true", help="nanomoshi's architecture with random weights")
    parser.add_argument("--model", nargs="*", default=[], metavar="FOLDER",
                        help="model folders in Kyutai's layout (several: stepped in turn, compared)")
    parser.add_argument("--lm", nargs="*", default=[], metavar="KEY=VALUE", help="with --nano: LMConfig fields")
    parser.add_argument("--mimi", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                        help="with --nano: codec config.json overrides, e.g. transformer.num_layers=1")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--compile", choices=["off", "on", "both"], default="off",
                        help="torch.compile the step: off, on, or both (eager and compiled stepped in turn)")
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args()
    from openmoshi.commands.common import configure_threading_env

    configure_threading_env()
    import torch

    from openmoshi.inference.models import load_models, resolve_model_files

    torch.set_num_interop_threads(1)
    if not args.nano and not args.model:
        parser.error("give --nano or --model FOLDER ...")
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.nano:
            from openmoshi.testing.nano_model import build_nano_repo

            folder = build_nano_repo(Path(tmp) / "nano", lm_overrides=parse_overrides(args.lm),
                                     mimi_overrides=parse_overrides(args.mimi))
            folders = {"nano" + "".join(f" {x}" for x in args.lm + args.mimi): folder}
        else:
            folders = {}
        folders.update({Path(f).name: f for f in args.model})
        modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
        for name, folder in folders.items():
            for compile in modes:  # a copy of the weights each: a session holds its models' streaming state
                models[name + (" compiled" if compile else "")] = (load_models(resolve_model_files(folder), "cpu"),
                                                                   compile)
    rows = []
    for threads in args.threads:
        for batch in args.batch:
            for row in measure(models, batch, threads, args.steps, args.warmup):
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
