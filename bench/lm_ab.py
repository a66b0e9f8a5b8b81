"""A/B timing of our LM generator step between two checkouts (e.g. before / after a change), interleaved.

Each round runs one short subprocess per checkout, alternating (A, B, A, B, ...), each importing `openmoshi`
from its own checkout, building the same bench config with the same seeded random weights and timing
`LMGenerator.step` in CPU time of the process (`time.process_time`, 1 thread: time spent waiting for a core
on a busy machine is not counted), default sampling, medians. Reports per-round medians and the median
of the B / A ratios, which the machine's noise affects far less than absolute timings.

    .venv/bin/python bench/lm_ab.py /path/to/checkout_A /path/to/checkout_B [--rounds 5] [--steps 30]
        [--mode narrow|fresh] [--layers 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

WORKER = r"""
import json, os, statistics, sys, time
os.environ.setdefault("NO_TORCH_COMPILE", "1")
repo, mode, layers, steps, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, repo)
import torch
torch.set_num_threads(1)
import openmoshi
assert openmoshi.__file__.startswith(repo), openmoshi.__file__
from openmoshi.inference.generator import LMGenerator
from openmoshi.lm.config import LMConfig
from openmoshi.lm.model import LMModel
cfg = LMConfig.moshiko_7b().replace(dim=1024, num_layers=layers, num_heads=8, hidden=2816)
if mode == "narrow":
    cfg = cfg.replace(dim=64, num_heads=4, hidden=96, depformer_dim=64, depformer_num_heads=4, depformer_hidden=96)
torch.manual_seed(0)
model = LMModel(cfg).eval()
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for p in model.parameters():
        if p.dim() > 1:
            b = 3 ** 0.5 * p.shape[-1] ** -0.5
            p.uniform_(-b, b, generator=g)
user = torch.randint(0, cfg.card, (steps + warmup, 1, cfg.num_user_codebooks), generator=g)
times = []
with torch.no_grad(), LMGenerator(model, 1, seed=0) as gen:
    for i in range(steps + warmup):
        t0 = time.process_time()
        gen.step(user[i])
        if i >= warmup:
            times.append(time.process_time() - t0)
print(json.dumps({"ms": 1e3 * statistics.median(times)}))
"""


def run(repo: str, args: argparse.Namespace) -> float:
    cmd = [sys.executable, "-c", WORKER, repo, args.mode, str(args.layers), str(args.steps), str(args.warmup)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=repo).stdout
    return json.loads(out.strip().splitlines()[-1])["ms"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--mode", default="narrow", choices=["narrow", "fresh"])
    p.add_argument("--layers", type=int, default=8)
    args = p.parse_args()
    a_ms, b_ms = [], []
    for r in range(args.rounds):
        a_ms.append(run(args.a, args))
        b_ms.append(run(args.b, args))
        print(f"round {r}: A {a_ms[-1]:.2f} ms, B {b_ms[-1]:.2f} ms, B/A {b_ms[-1] / a_ms[-1]:.3f}", flush=True)
    ratios = [b / a for a, b in zip(a_ms, b_ms, strict=True)]
    print(f"{args.mode}, {args.layers} layers: A median {statistics.median(a_ms):.2f} ms, B median "
          f"{statistics.median(b_ms):.2f} ms, median B/A {statistics.median(ratios):.3f} over {args.rounds} rounds")


if __name__ == "__main__":
    main()
