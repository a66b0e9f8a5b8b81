"""Busy-machine benchmark: per-frame time of the streaming commands' work with a busy neighbour process.

Two workloads, the per-frame work of `openmoshi codec demo` / `codec --streaming` and of `openmoshi chat`:
- `mimi`: one streaming step of the released-size Mimi (encode + decode of one 80 ms frame; random weights);
- `chat`: one `DuplexSession` step of a tiny Moshi in Kyutai's layout (the one the command tests use), loaded as
  `openmoshi chat` loads it.
Settings compared: torch intra-op threads 1 vs 2, and the OpenMP wait policy: `default` (the runtime's own: a
thread spins a while before sleeping) vs `tuned` (what `openmoshi` sets before importing torch:
OMP_WAIT_POLICY=PASSIVE, KMP_BLOCKTIME=0; commands/common.py). A policy is fixed when torch loads, so each
policy runs in its own process; thread counts alternate inside it. Scenarios: `quiet` (no neighbour) and `busy`
(N neighbour processes each spinning a Python loop, as another program keeping cores busy would). The processes
run interleaved (round r: quiet/busy x default/tuned), and medians are taken over all rounds.

Run: .venv/bin/python bench/busy.py [--rounds 3] [--neighbours 1] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


# ---- worker: one process, one wait policy -------------------------------------------------------------------
def _time_frames(step, warmup: int, frames: int, budget_s: float) -> list[float]:
    """ms per call of `step()`: after `warmup` calls, up to `frames` calls or `budget_s` seconds (>= 3 calls)."""
    for _ in range(warmup):
        step()
    out: list[float] = []
    start = time.perf_counter()
    while len(out) < frames and (len(out) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        step()
        out.append(1000 * (time.perf_counter() - t0))
    return out


def worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    sys.path.insert(0, str(ROOT))
    import torch

    from openmoshi.codec.mimi import Mimi
    from openmoshi.inference.models import load_models, resolve_model_files
    from openmoshi.inference.session import DuplexSession
    from openmoshi.nn.streaming import streaming

    torch.set_num_interop_threads(1)
    gen = torch.Generator().manual_seed(0)
    mimi = Mimi().eval()
    tiny = load_models(resolve_model_files(args.repo), "cpu")
    results: dict[str, list[float]] = {}
    with torch.inference_mode(), streaming(mimi, 1), DuplexSession(tiny.mimi, tiny.lm, 1, seed=0) as session:
        big = 0.1 * torch.randn(1, 1, mimi.frame_size, generator=gen)
        small = 0.1 * torch.randn(1, 1, tiny.mimi.frame_size, generator=gen)
        for threads in (1, 2, 2, 1):  # alternated: drift of the machine's load hits both counts alike
            torch.set_num_threads(threads)
            results.setdefault(f"mimi/{threads}", []).extend(
                _time_frames(lambda: mimi.decode(mimi.encode(big)), 1, args.frames, args.budget))
            results.setdefault(f"chat/{threads}", []).extend(
                _time_frames(lambda: session.step(small), 2, 4 * args.frames, args.budget))
    print(json.dumps(results))


# ---- parent: neighbours, interleaved rounds, report ---------------------------------------------------------
def _env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARS}
    if policy == "tuned":
        sys.path.insert(0, str(ROOT))
        from openmoshi.commands.common import configure_threading_env

        saved = {k: os.environ.pop(k, None) for k in POLICY_VARS}
        configure_threading_env()
        env.update({k: os.environ[k] for k in POLICY_VARS if k in os.environ})
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return env


def _spawn_neighbours(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _make_repo(folder: Path) -> Path:
    """The tiny Moshi of the command tests, in Kyutai's layout: random reference weights (bench/ may import
    `moshi`; it imports nothing from tests/)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    from moshi.models.lm import LMModel as RefLM
    from moshi.models.loaders import get_mimi

    from openmoshi.testing.kyutai import (
        kyutai_tiny_mimi_config,
        make_reference,
        published_state_dict,
        tiny_lm_config,
        write_kyutai_repo,
    )
    from openmoshi.testing.mimi_init import random_like

    cfg = tiny_lm_config()
    lm_state = published_state_dict(make_reference(cfg, RefLM, seed=0))
    mimi_state = random_like(get_mimi(None, mimi_config=kyutai_tiny_mimi_config()).state_dict(), 0)
    return write_kyutai_repo(folder / "tiny", cfg, lm_state, mimi_state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--neighbours", type=int, default=1, help="busy processes beside the measured one")
    parser.add_argument("--frames", type=int, default=8, help="Mimi frames per measurement (chat: 4x)")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per measurement at most")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repo", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    results: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = _make_repo(Path(tmp))
        for r in range(args.rounds):
            for scenario in ("quiet", "busy"):
                for policy in (("default", "tuned") if r % 2 == 0 else ("tuned", "default")):
                    neighbours = _spawn_neighbours(args.neighbours if scenario == "busy" else 0)
                    try:
                        time.sleep(0.2 if neighbours else 0)
                        cmd = [sys.executable, __file__, "--worker", "--repo", str(repo), "--frames",
                               str(args.frames), "--budget", str(args.budget)]
                        out = subprocess.run(cmd, env=_env(policy), capture_output=True, text=True, check=True)
                    finally:
                        for p in neighbours:
                            p.kill()
                            p.wait()
                    for key, values in json.loads(out.stdout.strip().splitlines()[-1]).items():
                        results.setdefault((scenario, policy, key), []).extend(values)
                    print(f"round {r + 1}/{args.rounds} {scenario} {policy} done", file=sys.stderr)
            if r + 1 < args.rounds:
                _report(results, args, r + 1)  # partial tables: a long run still leaves numbers behind
    _report(results, args, args.rounds)


def _report(results: dict[tuple[str, str, str], list[float]], args: argparse.Namespace, rounds: int) -> None:
    def med(scenario: str, policy: str, key: str) -> float:
        return statistics.median(results[(scenario, policy, key)])

    print(f"median ms per frame ({os.cpu_count()} cores, {args.neighbours} spinning neighbour(s) when busy, "
          f"{rounds} interleaved rounds)", flush=True)
    head = "| work | threads | quiet, default | quiet, tuned | busy, default | busy, tuned |"
    print(head if args.markdown else head.replace("|", " "))
    if args.markdown:
        print("|---|---|---|---|---|---|")
    for work in ("mimi", "chat"):
        for threads in (1, 2):
            key = f"{work}/{threads}"
            cells = [f"{med(s, p, key):.1f}" for s in ("quiet", "busy") for p in ("default", "tuned")]
            row = f"| {work} | {threads} | " + " | ".join(cells) + " |"
            print(row if args.markdown else row.replace("|", " "), flush=True)


if __name__ == "__main__":
    main()
