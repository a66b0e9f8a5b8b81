"""Runtime benchmark: the 80 ms duplex step (encode, generate, decode), the delay to an answer, batched throughput.

Ours (`DuplexSession`) against the reference (`moshi` 0.2.13: MimiModel + LMGen, which serve one conversation
per process), on the same random weights, in the same run:
1. per-frame compute time of one conversation, split into Mimi encode / generator step / Mimi decode, both
   implementations interleaved frame by frame (medians over --frames frames, after warm-up);
2. the delay from a user's frame to the answering frame: which of Moshi's frames first changes when one user
   frame changes (measured, in frames), turned into milliseconds with the frame length and the step time;
3. batched throughput: ours with B conversations in one batch (B doubling until a step takes longer than a frame)
   against the reference with one conversation per process (P processes at once, one thread each): total frames
   per second and the most conversations that stay real time (a step within 80 ms).

The config is mid-size: the released Mimi (79 M parameters, 8 codebooks) and an LM with the real vocabularies
and stream layout but a reduced temporal transformer (--dim, --layers) and depth transformer (--dep-dim,
--dep-layers), so that one conversation runs in real time on a laptop-class CPU.
Run: .venv/bin/python bench/runtime.py [--threads 2] [--frames 30]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's openmoshi (helpers shared with the tests: openmoshi.testing)

import torch  # noqa: E402

FRAME_MS = 80.0
DEVICE = torch.device("cpu")


def now() -> float:
    """Wall time after the device's queued work is done (CPU: nothing to wait for)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def noise(*shape: int, generator: torch.Generator) -> torch.Tensor:
    return (0.1 * torch.randn(*shape, generator=generator)).to(DEVICE)


def lm_config(args):
    from openmoshi.lm.config import LMConfig

    return LMConfig.moshiko_7b().replace(
        dim=args.dim, num_layers=args.layers, num_heads=args.dim // 64, hidden=args.dim * 11 // 4,
        depformer_dim=args.dep_dim, depformer_num_layers=args.dep_layers,
        depformer_num_heads=args.dep_dim // 64, depformer_hidden=args.dep_dim * 11 // 4,
    )


def make_states(args, folder: Path) -> None:
    """Random weights for Mimi and the LM, in Kyutai's naming, saved for every process to load."""
    from moshi.models.lm import LMModel as RefLMModel
    from moshi.models.loaders import get_mimi
    from safetensors.torch import save_file

    from openmoshi.testing.kyutai import make_reference
    from openmoshi.testing.mimi_init import random_tensor

    gen = torch.Generator().manual_seed(0)
    mimi_state = {k: random_tensor(k, tuple(v.shape), gen).contiguous()
                  for k, v in get_mimi(None).state_dict().items()}
    save_file(mimi_state, str(folder / "mimi.safetensors"))
    save_file({k: v.contiguous() for k, v in make_reference(lm_config(args), RefLMModel, seed=0).state_dict().items()},
              str(folder / "lm.safetensors"))


def load_ours(args, folder: Path):
    from openmoshi.codec.checkpoint import load_safetensors
    from openmoshi.codec.mimi import Mimi
    from openmoshi.lm.checkpoint import load_lm
    from openmoshi.nn.prepare import prepare_for_inference

    mimi = Mimi()
    load_safetensors(mimi, folder / "mimi.safetensors")
    mimi = prepare_for_inference(mimi.to(DEVICE).eval())
    return mimi, load_lm(folder / "lm.safetensors", lm_config(args), device=DEVICE)


def load_reference(args, folder: Path):
    from moshi.models.lm import LMModel as RefLM
    from moshi.models.loaders import get_mimi
    from safetensors.torch import load_file

    from openmoshi.testing.kyutai import kyutai_kwargs

    mimi = get_mimi(str(folder / "mimi.safetensors"), num_codebooks=8, device=DEVICE)
    lm = RefLM(**kyutai_kwargs(lm_config(args)))
    lm.load_state_dict(load_file(str(folder / "lm.safetensors")))
    return mimi.eval(), lm.to(DEVICE).eval()


def ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


# ---- 1. per-frame breakdown ---------------------------------------------------------------------------------
@torch.no_grad()
def breakdown(ours, ref, frames: int) -> dict[str, dict[str, float]]:
    """Median ms of encode / generate / decode / total for one conversation, ours and the reference interleaved."""
    from moshi.models.lm import LMGen

    from openmoshi.inference.session import DuplexSession

    (mimi, lm), (ref_mimi, ref_lm) = ours, ref
    times = {name: {"encode": [], "generate": [], "decode": []} for name in ("ours", "reference")}
    gen = torch.Generator().manual_seed(1)
    ref_gen = LMGen(ref_lm)
    with DuplexSession(mimi, lm, 1, seed=0) as s, ref_mimi.streaming(1), ref_gen.streaming(1):
        for t in range(frames + 3):
            pcm = noise(1, 1, 1920, generator=gen)
            warm = t >= 3
            # ours: the session's three stages, as DuplexSession.step runs them
            t0 = now()
            codes = s.encode(pcm)
            t1 = now()
            out = s.generator.step(codes)
            t2 = now()
            if out is not None:
                s.mimi.decode(out.audio[:, :8, None])
            t3 = now()
            # the reference, the way its server runs a frame
            r0 = now()
            ref_codes = ref_mimi.encode(pcm)
            r1 = now()
            tokens = ref_gen.step(ref_codes)
            r2 = now()
            if tokens is not None:
                ref_mimi.decode(tokens[:, 1:])
            r3 = now()
            if warm:
                for name, (a, b, c, d) in (("ours", (t0, t1, t2, t3)), ("reference", (r0, r1, r2, r3))):
                    times[name]["encode"].append(b - a)
                    times[name]["generate"].append(c - b)
                    times[name]["decode"].append(d - c)
    result = {}
    for name, parts in times.items():
        totals = [sum(x) for x in zip(*parts.values(), strict=True)]
        result[name] = {k: ms(v) for k, v in parts.items()} | {"total": ms(totals)}
    return result


# ---- 2. delay to the answering frame --------------------------------------------------------------------------
@torch.no_grad()
def answer_delay_frames(ours, probe: int = 4, frames: int = 9) -> tuple[int, int]:
    """Steps from a user's frame to Moshi's first frame that depends on it (0 = the output of the same step):
    (first change in any audio codebook, first change in the text or semantic tokens)."""
    from openmoshi.inference.sampling import SamplingConfig
    from openmoshi.inference.session import DuplexSession

    mimi, lm = ours
    greedy = SamplingConfig(greedy=True)
    gen = torch.Generator().manual_seed(2)
    user = noise(frames, 1, 1, 1920, generator=gen)
    changed = user.clone()
    changed[probe] = noise(1, 1, 1920, generator=gen)
    outs = []
    for audio in (user, changed):
        with DuplexSession(mimi, lm, 1, text_sampling=greedy, audio_sampling=greedy) as s:
            outs.append([s.step(f) for f in audio])
    any_audio = [t for t in range(frames) if not torch.equal(outs[0][t].audio, outs[1][t].audio)]
    semantic = [t for t in range(frames) if not (torch.equal(outs[0][t].text, outs[1][t].text)
                                                   and torch.equal(outs[0][t].audio[:, 0], outs[1][t].audio[:, 0]))]
    if not any_audio or not semantic:
        raise RuntimeError("changing a user frame changed nothing")
    return any_audio[0] - probe, semantic[0] - probe


# ---- 3. throughput ----------------------------------------------------------------------------------------------
@torch.no_grad()
def ours_batched(ours, batch: int, frames: int) -> float:
    """Median seconds of one session step for `batch` conversations."""
    from openmoshi.inference.session import DuplexSession

    mimi, lm = ours
    gen = torch.Generator().manual_seed(3)
    steps = []
    with DuplexSession(mimi, lm, batch, seed=0) as s:
        for t in range(frames + 3):
            pcm = noise(batch, 1, 1920, generator=gen)
            start = now()
            s.step(pcm)
            if t >= 3:
                steps.append(now() - start)
    return statistics.median(steps)


def _reference_worker(args, folder, frames, barrier, results) -> None:
    """One reference conversation in its own process (how Kyutai's server scales): median step seconds."""
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(1)
    from moshi.models.lm import LMGen

    mimi, lm = load_reference(args, folder)
    lm_gen = LMGen(lm)
    gen = torch.Generator().manual_seed(os.getpid())
    steps = []
    with torch.no_grad(), mimi.streaming(1), lm_gen.streaming(1):
        for t in range(frames + 3):
            if t == 3:
                barrier.wait()  # every process times the same stretch of wall time
            pcm = noise(1, 1, 1920, generator=gen)
            start = now()
            tokens = lm_gen.step(mimi.encode(pcm))
            if tokens is not None:
                mimi.decode(tokens[:, 1:])
            if t >= 3:
                steps.append(now() - start)
    results.put(statistics.median(steps))


def reference_processes(args, folder: Path, processes: int, frames: int) -> list[float]:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_reference_worker, args=(args, folder, frames, barrier, results))
             for _ in range(processes)]
    for p in procs:
        p.start()
    out = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of ours (one process); the reference gets as many 1-thread processes")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--frames", type=int, default=30, help="timed frames per measurement")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dep-dim", type=int, default=256)
    parser.add_argument("--dep-layers", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-processes", type=int, default=None, help="default: --threads")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    cfg = lm_config(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_states(args, folder)
        ours, ref = load_ours(args, folder), load_reference(args, folder)
        n_lm = sum(p.numel() for p in ours[1].parameters())
        print(f"config: Mimi 79.3M params (8 codebooks) + LM {n_lm / 1e6:.1f}M params (dim {cfg.dim} x "
              f"{cfg.num_layers} layers, depth {cfg.depformer_dim} x {cfg.depformer_num_layers} x {cfg.dep_q} "
              f"steps); {DEVICE}, {args.threads} threads; {args.frames} frames per figure; medians")

        print("\n1. one conversation, ms per 80 ms frame (interleaved)")
        b = breakdown(ours, ref, args.frames)
        print(f"{'':10s} {'encode':>8s} {'generate':>9s} {'decode':>8s} {'total':>8s}")
        for name in ("ours", "reference"):
            r = b[name]
            print(f"{name:10s} {r['encode']:8.1f} {r['generate']:9.1f} {r['decode']:8.1f} {r['total']:8.1f}")
        print(f"{'ratio':10s} " + " ".join(f"{b['reference'][k] / b['ours'][k]:{w}.2f}x" for k, w in
                                          (("encode", 7), ("generate", 8), ("decode", 7), ("total", 7))))

        d_audio, d_sem = answer_delay_frames(ours)
        step_ms = b["ours"]["total"]
        print(f"\n2. delay to the answering frame (acoustic delay {cfg.max_delay}): Moshi's first frame that depends "
              f"on a user's frame is the output of step +{d_audio} (its acoustic codebooks); its text and semantic "
              f"tokens react at step +{d_sem}. From the start of the user's frame: {FRAME_MS:.0f} ms capture + "
              f"steps x {FRAME_MS:.0f} ms + one step ({step_ms:.1f} ms) = {FRAME_MS * (1 + d_audio) + step_ms:.0f} ms "
              f"(acoustic) / {FRAME_MS * (1 + d_sem) + step_ms:.0f} ms (text, semantic); the reference's step: "
              f"{b['reference']['total']:.1f} ms")
        print(f"\n3. throughput: ours batched ({args.threads} threads, one process) vs the reference, one "
              f"conversation per process (1 thread each)")
        print(f"{'conversations':>13s} {'ours ms/step':>13s} {'ours frames/s':>14s} {'real time':>10s}")
        measured: dict[int, float] = {}

        def measure(batch: int) -> bool:
            step = measured[batch] = ours_batched(ours, batch, max(8, args.frames // 2))
            rt = step * 1000 <= FRAME_MS
            print(f"{batch:13d} {1000 * step:13.1f} {batch / step:14.1f} {'yes' if rt else 'no':>10s}")
            return rt

        # every power of two up to --max-batch (the throughput curve), then bisection at the real-time limit
        good, bad = 0, None
        batch = 1
        while batch <= args.max_batch:
            if measure(batch):
                good = batch
            elif bad is None:
                bad = batch
            batch *= 2
        while bad is not None and good < bad and bad - good > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if measure(mid) else (good, mid)
        best_ours = good
        print(f"{'processes':>13s} {'ref ms/step':>13s} {'ref frames/s':>14s} {'real time':>10s}")
        best_ref, best_ref_fps, max_p = 0, 0.0, args.max_processes or args.threads
        for processes in range(1, max_p + 1):
            steps = reference_processes(args, folder, processes, max(8, args.frames // 2))
            rt = max(steps) * 1000 <= FRAME_MS
            best_ref = processes if rt else best_ref
            best_ref_fps = max(best_ref_fps, sum(1 / s for s in steps))
            print(f"{processes:13d} {1000 * max(steps):13.1f} {sum(1 / s for s in steps):14.1f} "
                  f"{'yes' if rt else 'no':>10s}")
            if not rt:
                break
        best_fps = max(b_ / t_ for b_, t_ in measured.items())
        print(f"\nlargest real-time load: ours {best_ours} conversation(s) in one batch; reference {best_ref} "
              f"conversation(s) (one process each). Peak throughput: ours {best_fps:.1f} frames/s "
              f"({best_fps / 12.5:.2f} conversations' worth), reference {best_ref_fps:.1f} frames/s "
              f"({best_ref_fps / 12.5:.2f})")


if __name__ == "__main__":
    main()
