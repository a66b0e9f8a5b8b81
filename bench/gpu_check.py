"""One GPU check of the project's promises, ours against Kyutai's reference (moshi 0.2.13) in the same run.

Parts (each in its own process, under a hard time limit; a failing part reports its error, the others go on):
- lm_step: one 80 ms LM step (temporal transformer + depth transformer sampling 8 codebooks) at the 7B's shapes
  (moshiko: 4096 x 32 layers, depth 1024 x 6), random bf16 weights, batch 1 and 4 (--batches): ours eager, ours
  with the whole `LMGenerator.step` captured in a CUDA graph (static-shape attention), the reference's LMGen (its
  default on CUDA: CUDA graphs), interleaved step by step; medians and the ratio reference / ours. Also whether
  the graphed step draws exactly the tokens of the same steps run eagerly in static-shape mode.
- lm_parity: a small config (real vocabularies) in fp32 on the device: greedy tokens ours vs the reference,
  step by step (where they first differ, the reference's top-2 logit gap there); and ours bf16 against ours fp32
  teacher-forced (max logit error over the logits' range, agreement of the clear argmaxes).
- mimi: the released Mimi's size (random weights), streaming encode + decode of one 80 ms frame, batch 1: ours
  eager, ours CUDA-graphed, the reference (CUDA graphs); codes ours vs reference (streaming and whole-clip).
- session: our whole duplex step as served (DuplexSession: Mimi fp32 + the 7B LM bf16, eager), batch 1, the
  input frame on the host: the step time, the output's device and finiteness; then the same step captured whole in
  a CUDA graph (every row active, past the first frames), checked token for token against eager static mode.
- train_lm / train_lm_compile: `train_lm` on synthetic data for a ~120M config in bf16, eager / torch.compile;
  the trainer's own tokens/s (median after the warm-up steps).
- train_codec: `train_codec` with the `mimi` preset (discriminator on) a few steps: the trainer's audio s/s.

    python bench/gpu_check.py --device cuda --out DIR [--budget 390] [--parts lm_step,mimi]
    python bench/gpu_check.py --device cpu --tiny          # the same code paths at tiny sizes (a dry run)

Timing: torch.cuda.synchronize() around each call (a step's wall time, host overhead included), medians.
Results: a table on stdout, DIR/gpu_check.json, each part's output in DIR/gpu_check.log. Parts live in
bench/gpu_check_lm.py and bench/gpu_check_codec.py. Results of 2026-11-26 (H200): docs/benchmarks.md "GPU".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")  # the reference's torch.compile off (its CUDA graphs stay on)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's openmoshi
sys.path.insert(0, str(ROOT / "bench"))  # the parts: gpu_check_lm.py, gpu_check_codec.py

# part -> (share of the time budget, minimum seconds); run in this order
PARTS = {"lm_step": (0.26, 60), "mimi": (0.10, 30), "lm_parity": (0.10, 30), "session": (0.12, 40),
         "train_codec": (0.10, 30), "train_lm": (0.10, 30), "train_lm_compile": (0.22, 60)}


def runners() -> dict:
    """The parts' functions (imported in the child process only)."""
    from gpu_check_codec import part_mimi, part_train_codec, part_train_lm
    from gpu_check_lm import part_lm_parity, part_lm_step, part_session

    return {"lm_step": part_lm_step, "session": part_session, "lm_parity": part_lm_parity, "mimi": part_mimi,
            "train_lm": part_train_lm, "train_lm_compile": lambda a: part_train_lm(a, compile=True),
            "train_codec": part_train_codec}


# ---- driver -----------------------------------------------------------------------------------------------------
def child(args) -> None:
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    try:
        res = {"ok": True, **runners()[args.part](args)}
    except Exception as e:  # noqa: BLE001 -- the error is the result
        traceback.print_exc()
        res = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:500]}"}
    Path(args.result).write_text(json.dumps(res))


def device_info(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "python": sys.version.split()[0], "device": device}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_mem_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count)
    try:
        import moshi

        info["moshi"] = moshi.__version__
    except Exception as e:  # noqa: BLE001
        info["moshi"] = f"missing ({e})"
    return info


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (a dry run of every code path, e.g. on cpu)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"among {', '.join(PARTS)}")
    p.add_argument("--budget", type=float, default=390, help="seconds for all parts together")
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="lm_step batch sizes")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (cpu device)")
    p.add_argument("--out", default=None, help="folder for gpu_check.json and gpu_check.log")
    p.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.part:
        child(args)
        return
    parts = args.parts.split(",")
    if set(parts) - set(PARTS):
        p.error(f"unknown parts {sorted(set(parts) - set(PARTS))}")
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="gpu-check-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    log = open(out_dir / "gpu_check.log", "a")  # noqa: SIM115
    report: dict = {"info": device_info(args.device), "parts": {}}
    print(json.dumps(report["info"]), flush=True)
    start = time.perf_counter()
    forwarded = ["--device", args.device, "--steps", str(args.steps), "--threads", str(args.threads),
                 "--batches", *map(str, args.batches), *(["--tiny"] if args.tiny else [])]
    for i, name in enumerate(parts):
        left = args.budget - (time.perf_counter() - start)
        share, floor = PARTS[name]  # time a part leaves unused goes to the parts after it, in proportion
        limit = min(left, max(floor, left * share / sum(PARTS[n][0] for n in parts[i:])))
        if limit < 15:
            report["parts"][name] = {"ok": False, "error": "skipped: time budget spent"}
            continue
        result = out_dir / f".{name}.json"
        cmd = [sys.executable, __file__, *forwarded, "--part", name, "--result", str(result)]
        t0 = time.perf_counter()
        log.write(f"\n==== {name} (limit {limit:.0f} s)\n")
        log.flush()
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=limit)
            text = proc.stdout
            res = json.loads(result.read_text()) if result.exists() else {
                "ok": False, "error": f"exit {proc.returncode}: {text[-300:]}"}
        except subprocess.TimeoutExpired as e:
            text = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            res = {"ok": False, "error": f"timed out after {limit:.0f} s"}
        log.write(text)
        log.flush()
        result.unlink(missing_ok=True)
        res["part_s"] = round(time.perf_counter() - t0, 1)
        report["parts"][name] = res
        print(f"--- {name}: {json.dumps(res)}", flush=True)
        if not res["ok"]:
            print(text[-1500:], flush=True)
        (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print("\n| part | measure | value |\n|---|---|---|")
    for name, res in report["parts"].items():
        for k, v in res.items():
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    print(f"| {name} | {k}.{k2} | {fmt(v2)} |")
            else:
                print(f"| {name} | {k} | {fmt(v)} |")
    print(f"total {time.perf_counter() - start:.0f} s; JSON: {out_dir / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
