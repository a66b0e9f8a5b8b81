"""One GPU check of the project's promises, ours against Kyutai's reference (moshi 0.2.13) in the same run.

Parts (each in its own process, under a hard time limit; a failing part reports its error, the others go on):
- lm_step: one 80 ms LM step (temporal transformer + depth transformer sampling 8 codebooks) at the 7B's shapes
  (moshiko: 4096 x 32 layers, depth 1024 x 6), random bf16 weights, batch 1 and 4: ours eager, ours with the step
  captured in a CUDA graph, the reference's LMGen (its default on CUDA: CUDA graphs), interleaved step by step;
  medians and the ratio reference / ours. Also whether the graphed step draws the eager step's tokens.
- lm_parity: a small config (real vocabularies) in fp32 on the device: greedy tokens ours vs the reference,
  step by step (where they first differ, the reference's top-2 logit gap there); and ours bf16 against ours fp32
  teacher-forced (max logit error over the logits' range, agreement of the clear argmaxes).
- mimi: the released Mimi's size (random weights), streaming encode + decode of one 80 ms frame, batch 1: ours
  eager, ours CUDA-graphed, the reference (CUDA graphs); codes ours vs reference (streaming and whole-clip).
- session: our whole duplex step as served (DuplexSession: Mimi fp32 + the 7B LM bf16, eager), batch 1, the
  input frame on the host: the step time and that the output is finite, on the host side.
- train_lm / train_lm_compile: `train_lm` on synthetic data for a ~120M config in bf16, eager / torch.compile;
  the trainer's own tokens/s (median after the warm-up steps).
- train_codec: `train_codec` with the `mimi` preset (discriminator on) a few steps: the trainer's audio s/s.

    python bench/gpu_check.py --device cuda --out DIR [--budget 390] [--parts lm_step,mimi]
    python bench/gpu_check.py --device cpu --tiny          # the same code paths at tiny sizes (a dry run)

Timing: torch.cuda.synchronize() around each call (a step's wall time, host overhead included), medians.
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
import traceback
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")  # the reference's torch.compile off (its CUDA graphs stay on)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# part -> (share of the time budget, minimum seconds); run in this order
PARTS = {"lm_step": (0.26, 60), "mimi": (0.10, 30), "lm_parity": (0.10, 30), "session": (0.12, 40),
         "train_codec": (0.10, 30), "train_lm": (0.10, 30), "train_lm_compile": (0.22, 60)}


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleave(fns: dict, steps: int, warmup: int, device) -> dict[str, float]:
    """Call each fn(i) in turn for every step; median ms per call after `warmup` steps."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(steps + warmup):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn(i)
            sync(device)
            if i >= warmup:
                times[name].append(1e3 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def graphed(step, static_inputs: list, device, warmup: int = 3):
    """Capture step(*static_inputs) in a CUDA graph after `warmup` eager calls on a side stream; returns
    (replay(*inputs) -> outputs, outputs). Each eager warm-up call advances the streaming state like a step."""
    import torch

    s = torch.cuda.Stream(device)
    s.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(s):
        for _ in range(warmup):
            step(*static_inputs)
    torch.cuda.current_stream(device).wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(*static_inputs)

    def replay(*inputs):
        for dst, src in zip(static_inputs, inputs, strict=True):
            dst.copy_(src)
        graph.replay()
        return out

    return replay, out


# ---- LM ---------------------------------------------------------------------------------------------------------
def lm_pair(cfg, device, dtype, seed: int = 0):
    """(reference, ours) with the same random weights, made on the device (built on meta: one allocation each)."""
    import torch
    from moshi.models.lm import LMModel as RefLMModel

    from openmoshi.lm.checkpoint import build_empty, load_state_dict
    from openmoshi.testing.kyutai import kyutai_kwargs

    with torch.device("meta"):
        ref = RefLMModel(**kyutai_kwargs(cfg), dtype=dtype)
    ref = ref.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in ref.named_parameters():  # as openmoshi.testing.kyutai.randomize_reference, on the device
            if name.endswith("alpha"):
                p.normal_(1.0, 0.2, generator=gen)
            else:
                p.normal_(0.0, p.shape[-1] ** -0.5, generator=gen)
    ours = build_empty(cfg, device=device, dtype=dtype)
    load_state_dict(ours, ref.state_dict())
    return ref.eval(), ours.eval()


def part_lm_step(args) -> dict:
    import torch

    from openmoshi.lm.config import LMConfig

    cfg = LMConfig.moshiko_7b()
    if args.tiny:
        cfg = cfg.replace(dim=128, num_layers=2, num_heads=4, hidden=352, depformer_dim=64, depformer_num_layers=2,
                          depformer_num_heads=4, depformer_hidden=176)
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    t0 = time.perf_counter()
    ref, ours = lm_pair(cfg, args.device, dtype)
    out: dict = {"config": f"temporal {cfg.dim}x{cfg.num_layers}, depth {cfg.depformer_dim}x{cfg.depformer_num_layers}"
                           f" x {cfg.dep_q} codebooks, {str(dtype)[6:]}", "build_s": time.perf_counter() - t0,
                 "params_b": sum(p.numel() for p in ours.parameters()) / 1e9}
    print(f"lm_step: built both models in {out['build_s']:.0f} s", flush=True)
    steps, warmup = (6, 2) if args.tiny else (args.steps, 8)
    for batch in args.batches:
        try:
            out[f"batch{batch}"] = row = _lm_step_batch(args, cfg, ref, ours, batch, steps, warmup)
        except Exception as e:  # noqa: BLE001 -- e.g. out of memory at a large batch: the other batches stand
            traceback.print_exc()
            out[f"batch{batch}"] = row = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(f"lm_step batch {batch}: {json.dumps(row)}", flush=True)
    return out


def _lm_step_batch(args, cfg, ref, ours, batch: int, steps: int, warmup: int) -> dict:
    import torch
    from moshi.models.lm import LMGen

    from openmoshi.inference.generator import LMGenerator
    from openmoshi.nn.attention import set_static_shapes

    user = torch.randint(0, cfg.card, (steps + warmup + 8, batch, cfg.num_user_codebooks), device=args.device)
    row: dict = {}
    # phase 1: ours eager against the reference
    lm_gen = LMGen(ref, use_sampling=True, temp=0.8, temp_text=0.7, top_k=250, top_k_text=25)
    eager_tokens = []
    with torch.no_grad(), lm_gen.streaming(batch), LMGenerator(ours, batch, seed=0) as gen:
        def ours_step(i, gen=gen):
            o = gen.step(user[i])
            if o is not None:
                eager_tokens.append(torch.cat([o.text[:, None], o.audio], 1).clone())

        t = interleave({"ours_eager_ms": ours_step,
                        "ref_ms": lambda i, g=lm_gen: g.step(user[i][:, :, None])}, steps, warmup, args.device)
    row.update(t)
    row["ref_over_ours_eager"] = t["ref_ms"] / t["ours_eager_ms"]
    # phase 2: ours with the whole step captured in a CUDA graph (static-shape attention), against the reference
    if torch.device(args.device).type == "cuda":
        try:
            set_static_shapes(ours, True)
            lm_gen = LMGen(ref, use_sampling=True, temp=0.8, temp_text=0.7, top_k=250, top_k_text=25)
            graph_tokens = []
            with torch.no_grad(), lm_gen.streaming(batch), LMGenerator(ours, batch, seed=0) as gen:
                # steps 0..3 eager (the inputs of phase 1), then the captured step runs from step 4
                for i in range(3):
                    gen.step(user[i])
                static_user = user[3].clone()
                replay, _ = graphed(lambda u, gen=gen: gen.step(u), [static_user], args.device, warmup=1)
                first = 4

                def graph_step(i, replay=replay):
                    o = replay(user[first + i])
                    graph_tokens.append(torch.cat([o.text[:, None], o.audio], 1).clone())

                t = interleave({"ours_graph_ms": graph_step,
                                "ref2_ms": lambda i, g=lm_gen: g.step(user[i][:, :, None])},
                               steps, warmup, args.device)
            row.update(t)
            row["ref_over_ours_graph"] = t["ref2_ms"] / t["ours_graph_ms"]
            # eager_tokens[j] is the output of step max_delay + j; the graphed outputs start at step `first`
            skip = first - cfg.max_delay
            n = min(len(graph_tokens), len(eager_tokens) - skip)
            same = [torch.equal(graph_tokens[j], eager_tokens[skip + j]) for j in range(n)]
            row["graph_equals_eager_frames"] = f"{sum(same)}/{n}"
            row["graph_vs_eager_differing_frames"] = [j for j in range(n) if not same[j]][:10]
            # the same steps eager in the graph's static-shape mode: a correct capture draws exactly these tokens
            static_tokens = []
            with torch.no_grad(), LMGenerator(ours, batch, seed=0) as gen:
                for i in range(first + len(graph_tokens)):
                    o = gen.step(user[i])
                    if i >= first:
                        static_tokens.append(torch.cat([o.text[:, None], o.audio], 1))
            same = [torch.equal(a, b) for a, b in zip(graph_tokens, static_tokens, strict=True)]
            row["graph_equals_eager_static_frames"] = f"{sum(same)}/{len(same)}"
        except Exception as e:  # noqa: BLE001 -- reported, the eager numbers stand
            row["graph_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            traceback.print_exc()
        finally:
            set_static_shapes(ours, False)
    if torch.device(args.device).type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def _small_lm_config(tiny: bool):
    from openmoshi.lm.config import LMConfig

    if tiny:
        return LMConfig.tiny()
    return LMConfig.moshiko_7b().replace(dim=512, num_layers=4, num_heads=8, hidden=1408, context=64,
                                         depformer_dim=256, depformer_num_layers=2, depformer_num_heads=4,
                                         depformer_hidden=704)


def part_lm_parity(args) -> dict:
    import torch
    from moshi.models.lm import LMGen

    import openmoshi.inference.generator as generator_module
    from openmoshi.inference.generator import LMGenerator
    from openmoshi.inference.sampling import SamplingConfig

    os.environ["NO_CUDA_GRAPH"] = "1"  # the reference's graphs would capture the host reads of the hooks below
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfg = _small_lm_config(args.tiny)
    greedy = SamplingConfig(greedy=True)
    steps, batch = (20 if args.tiny else 150), 2
    ref, ours = lm_pair(cfg, args.device, torch.float32, seed=1)
    user = torch.randint(0, cfg.card, (steps, batch, cfg.num_user_codebooks), device=args.device,
                         generator=torch.Generator(device=args.device).manual_seed(2))
    gaps, ref_s = [], []

    def gap(x):
        top = x.float().topk(2, dim=-1).values
        return (top[..., 0] - top[..., 1]).min().item()

    lm_gen = LMGen(ref, use_sampling=False, on_text_logits_hook=lambda x: gaps.append([gap(x[:, 0, 0])]),
                   on_text_hook=lambda t: ref_s.append([t.clone()]),
                   on_audio_hook=lambda a: ref_s[-1].append(a.clone()))
    depformer = ref.forward_depformer

    def recording_depformer(*a, **k):
        logits = depformer(*a, **k)
        gaps[-1].append(gap(logits[:, 0, 0]))
        return logits

    ref.forward_depformer = recording_depformer
    ours_s = []
    with torch.no_grad(), lm_gen.streaming(batch):
        for t in range(steps):
            lm_gen.step(user[t][:, :, None])
    with torch.no_grad(), LMGenerator(ours, batch, text_sampling=greedy, audio_sampling=greedy) as g:
        for t in range(steps):
            g.step(user[t])
            ours_s.append([x.clone() for x in g.last_sampled])
    out: dict = {"config": f"temporal {cfg.dim}x{cfg.num_layers}, depth {cfg.depformer_dim}x"
                           f"{cfg.depformer_num_layers}, fp32 (tf32 off), greedy, batch {batch}", "steps": steps}
    first = None
    for t in range(steps):
        a_ref = torch.cat([ref_s[t][0].view(batch, 1), ref_s[t][1].view(batch, -1)], 1)
        a_ours = torch.cat([ours_s[t][0].view(batch, 1), ours_s[t][1].view(batch, -1)], 1)
        if not torch.equal(a_ref, a_ours):
            draw = int((a_ref != a_ours).any(0).nonzero()[0])
            first = {"step": t, "draw": draw, "ref_top2_gap": gaps[t][draw]}
            break
    out["greedy_tokens_equal_steps"] = f"{steps if first is None else first['step']}/{steps}"
    out["first_mismatch"] = first
    # bf16 ours against fp32 ours, teacher-forced with the fp32 run's tokens (as tests/inference/test_generator_bf16)
    runs = []
    for dtype, replay in ((torch.float32, None), (torch.bfloat16, "fp32")):
        seen, drawn = [], []

        def recording(logits, *settings, seen=seen, drawn=drawn, replay=replay):
            seen.append(logits.float().clone())
            tok = logits.argmax(-1) if replay is None else runs[0][1][len(drawn)]
            drawn.append(tok)
            return tok

        model = ours.to(dtype)
        saved = generator_module.sample_rows
        generator_module.sample_rows = recording
        try:
            with torch.no_grad(), LMGenerator(model, batch, greedy, greedy) as g:
                for t in range(min(steps, 60)):
                    g.step(user[t])
        finally:
            generator_module.sample_rows = saved
        runs.append((seen, drawn))
    errs, clear_ok, clear_n = [], 0, 0
    for a, b in zip(runs[0][0], runs[1][0], strict=True):
        scale = a.abs().max()
        errs.append(((a - b).abs().max() / scale).item())
        top2 = a.topk(2, dim=-1).values
        clear = (top2[:, 0] - top2[:, 1]) > 2 * 0.03 * scale
        clear_ok += int((a.argmax(-1)[clear] == b.argmax(-1)[clear]).sum())
        clear_n += int(clear.sum())
    out["bf16_vs_fp32_max_logit_err"] = max(errs)
    out["bf16_vs_fp32_median_logit_err"] = statistics.median(errs)
    out["bf16_clear_argmax_agree"] = f"{clear_ok}/{clear_n}"
    return out


# ---- Mimi -------------------------------------------------------------------------------------------------------
def part_mimi(args) -> dict:
    import torch
    from moshi.models.loaders import get_mimi
    from safetensors.torch import save_file

    from openmoshi.codec.checkpoint import load_mimi
    from openmoshi.nn.attention import set_static_shapes
    from openmoshi.nn.streaming import streaming
    from openmoshi.testing.mimi_init import random_state, to_published_naming

    torch.backends.cudnn.allow_tf32 = False  # fp32 convolutions in both (codes parity)
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = args.device
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mimi.safetensors"
        save_file(to_published_naming(random_state(0)), str(path))
        ours = load_mimi(path, device=dev)
        ref = get_mimi(str(path), device=dev)
    frame = 1920
    steps, warmup = (4, 2) if args.tiny else (args.steps, 8)
    n = steps + warmup + 8
    wav = 0.1 * torch.randn(1, 1, n * frame, generator=torch.Generator().manual_seed(0))
    wav = wav.to(dev)
    codes: dict[str, list] = {"ours": [], "ref": [], "graph": []}
    out: dict = {"config": "released Mimi size (random weights), 8 codebooks, fp32 (tf32 off), batch 1"}

    def ours_step(i):
        c = ours.encode(wav[..., i * frame:(i + 1) * frame], 8)
        ours.decode(c)
        codes["ours"].append(c.clone())

    def ref_step(i):
        c = ref.encode(wav[..., i * frame:(i + 1) * frame])
        ref.decode(c)
        codes["ref"].append(c.clone())

    with torch.no_grad(), streaming(ours, 1), ref.streaming(1):
        t = interleave({"ours_eager_ms": ours_step, "ref_ms": ref_step}, steps, warmup, dev)
    out.update(t)
    out["ref_over_ours_eager"] = t["ref_ms"] / t["ours_eager_ms"]
    same = [torch.equal(a, b) for a, b in zip(codes["ours"], codes["ref"], strict=True)]
    out["stream_codes_equal_frames"] = f"{sum(same)}/{len(same)}"
    out["stream_codes_equal_share"] = statistics.mean(
        (a == b).float().mean().item() for a, b in zip(codes["ours"], codes["ref"], strict=True))
    with torch.no_grad():
        clip = wav[..., : 25 * frame]
        a, b = ours.encode(clip, 8), ref.encode(clip)
        out["clip_codes_equal_share"] = (a == b).float().mean().item()
        da, db = ours.decode(a), ref.decode(a)
        out["clip_decode_rel_err"] = ((da - db).norm() / db.norm()).item()
    if torch.device(dev).type == "cuda":
        try:
            set_static_shapes(ours, True)
            with torch.no_grad(), streaming(ours, 1):
                static = wav[..., :frame].clone()

                def step(x):
                    c = ours.encode(x, 8)
                    return c, ours.decode(c)

                replay, _ = graphed(step, [static], dev, warmup=1)  # frame 0 eager, the graph runs from frame 1

                def graph_step(i):
                    c, _ = replay(wav[..., (i + 1) * frame:(i + 2) * frame])
                    codes["graph"].append(c.clone())

                with ref.streaming(1):
                    t = interleave({"ours_graph_ms": graph_step, "ref2_ms": ref_step}, steps, warmup, dev)
            out.update(t)
            out["ref_over_ours_graph"] = t["ref2_ms"] / t["ours_graph_ms"]
            same = [torch.equal(a, b) for a, b in zip(codes["graph"], codes["ours"][1:], strict=False)]
            out["graph_codes_equal_eager_frames"] = f"{sum(same)}/{len(same)}"
        except Exception as e:  # noqa: BLE001 -- reported, the eager numbers stand
            out["graph_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            traceback.print_exc()
    return out


def part_session(args) -> dict:
    """Our whole duplex step (Mimi encode, LM step, Mimi decode) as served: Mimi fp32, the 7B LM in bf16."""
    import torch
    from safetensors.torch import save_file

    from openmoshi.codec.checkpoint import load_mimi
    from openmoshi.inference.session import DuplexSession
    from openmoshi.lm.config import LMConfig
    from openmoshi.testing.mimi_init import random_state, to_published_naming

    cfg = LMConfig.moshiko_7b()
    if args.tiny:
        cfg = cfg.replace(dim=128, num_layers=2, num_heads=4, hidden=352, depformer_dim=64, depformer_num_layers=2,
                          depformer_num_heads=4, depformer_hidden=176)
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    _, lm = lm_pair(cfg, args.device, dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mimi.safetensors"
        save_file(to_published_naming(random_state(0)), str(path))
        mimi = load_mimi(path, device=args.device)
    steps, warmup = (4, 2) if args.tiny else (args.steps, 5)
    pcm = 0.1 * torch.randn(steps + warmup, 1, 1, 1920, generator=torch.Generator().manual_seed(0))
    out: dict = {"config": f"Mimi fp32 + LM {cfg.dim}x{cfg.num_layers} {str(dtype)[6:]}, batch 1, input on the host"}
    outputs = []
    with DuplexSession(mimi, lm, batch_size=1, seed=0) as session:
        t = interleave({"session_step_ms": lambda i: outputs.append(session.step(pcm[i]))}, steps, warmup,
                       args.device)
    out.update(t)
    last = outputs[-1]
    out["output_pcm"] = f"{list(last.pcm.shape)} {last.pcm.dtype} {last.pcm.device}"
    out["output_finite"] = bool(torch.isfinite(last.pcm).all())
    if torch.device(args.device).type == "cuda":
        try:
            out.update(_session_graphed(mimi, lm, pcm.to(args.device), steps, warmup, args.device))
        except Exception as e:  # noqa: BLE001 -- reported, the eager numbers stand
            out["graph_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            traceback.print_exc()
    return out


def _session_graphed(mimi, lm, pcm, steps: int, warmup: int, device) -> dict:
    """The served step (every row active, past the first frames) captured whole in a CUDA graph, static shapes;
    its text tokens against the same steps run eagerly in static-shape mode."""
    import torch

    from openmoshi.inference.session import DuplexSession
    from openmoshi.nn.attention import set_static_shapes

    set_static_shapes(lm, True)
    set_static_shapes(mimi, True)
    first, n = 4, steps + warmup
    tokens: dict[str, list] = {"graph": [], "static": []}
    with DuplexSession(mimi, lm, batch_size=1, seed=0) as session:
        for i in range(first - 1):
            session.step(pcm[i])
        replay, _ = graphed(lambda x: session.step(x), [pcm[first - 1].clone()], device, warmup=1)

        def graph_step(i):
            o = replay(pcm[first + i % (n - first)])
            tokens["graph"].append(torch.cat([o.text[:, None], o.audio], 1).clone())

        t = interleave({"session_graph_ms": graph_step}, steps, warmup, device)
    with DuplexSession(mimi, lm, batch_size=1, seed=0) as session:
        for i in range(first + len(tokens["graph"])):
            o = session.step(pcm[i if i < first else first + (i - first) % (n - first)])
            if i >= first:
                tokens["static"].append(torch.cat([o.text[:, None], o.audio], 1))
    same = [torch.equal(a, b) for a, b in zip(tokens["graph"], tokens["static"], strict=True)]
    return {**t, "graph_equals_eager_static_frames": f"{sum(same)}/{len(same)}"}


# ---- training ---------------------------------------------------------------------------------------------------
LM_120M = ("model.overrides={dim: 640, num_layers: 8, num_heads: 10, hidden: 1728, depformer_dim: 256, "
           "depformer_num_layers: 2, depformer_num_heads: 4, depformer_hidden: 704, context: 256}")


def part_train_lm(args, compile: bool = False) -> dict:
    import torch

    from openmoshi.train.config import resolve_config
    from openmoshi.train.lm_config import LM_TRAIN_PRESETS, LMTrainConfig
    from openmoshi.train.lm_trainer import train_lm

    steps = 4 if args.tiny else 30
    sets = ["data.synthetic=true", f"train.steps={steps}", "train.log_every=1", "train.val_every=0",
            "train.checkpoint_every=0", f"train.device={args.device}", f"train.compile={str(compile).lower()}"]
    if args.tiny:
        sets += ["train.batch_size=2", "data.seq_frames=16"]
    else:
        sets += ["model.preset=moshiko_7b", LM_120M, "train.batch_size=16", "data.seq_frames=250",
                 "train.precision=bf16"]
    cfg = resolve_config(LMTrainConfig, "tiny", LM_TRAIN_PRESETS, sets)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        train_lm(cfg, run, progress=False, log=lambda m: None)
        wall = time.perf_counter() - t0
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in lines if "tokens_per_s" in r]
    loss = [r["loss"] for r in lines if "loss" in r]
    out = {"config": f"{'tiny' if args.tiny else '~120M (640x8, depth 256x2)'}, batch {cfg.train.batch_size} x "
                     f"{cfg.data.seq_frames} frames, {cfg.train.precision}, compile {compile}",
           "steps": steps, "wall_s": wall, "tokens_per_s": statistics.median(rates[3:] or rates),
           "first_step_tokens_per_s": rates[0], "loss_first": loss[0] if loss else None,
           "loss_last": loss[-1] if loss else None}
    if torch.device(args.device).type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def part_train_codec(args) -> dict:
    import numpy as np
    import soundfile as sf
    import torch

    from openmoshi.train.codec_config import CODEC_TRAIN_PRESETS, CodecTrainConfig
    from openmoshi.train.codec_trainer import train_codec
    from openmoshi.train.config import resolve_config

    steps = 3 if args.tiny else 8
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        folder.mkdir()
        rng = np.random.default_rng(0)
        t = np.arange(24000 * 30) / 24000
        wav = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(t))) + 0.05 * rng.standard_normal(t.size)
        sf.write(folder / "clip.wav", wav.astype(np.float32), 24000)
        preset = "tiny" if args.tiny else "mimi"
        sets = [f"data.source={folder}", f"train.steps={steps}", "train.log_every=1", "train.val_every=0",
                "train.checkpoint_every=0", f"train.device={args.device}", "loss.adversarial_start=0",
                "train.batch_size=2" if args.tiny else "train.batch_size=16",
                f"data.segment_seconds={0.5 if args.tiny else 2.0}"]
        cfg = resolve_config(CodecTrainConfig, preset, CODEC_TRAIN_PRESETS, sets)
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        train_codec(cfg, run, progress=False, log=lambda m: None)
        wall = time.perf_counter() - t0
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["audio_s_per_s"] for r in lines if "audio_s_per_s" in r]
    out = {"config": f"preset {preset}, batch {cfg.train.batch_size} x {cfg.data.segment_seconds} s, "
                     f"discriminator from step 0, {cfg.train.precision}",
           "steps": steps, "wall_s": wall, "audio_s_per_s": statistics.median(rates[2:] or rates)}
    if torch.device(args.device).type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


RUNNERS = {"lm_step": part_lm_step, "session": part_session, "lm_parity": part_lm_parity, "mimi": part_mimi,
           "train_lm": part_train_lm, "train_lm_compile": lambda a: part_train_lm(a, compile=True),
           "train_codec": part_train_codec}


# ---- driver -----------------------------------------------------------------------------------------------------
def child(args) -> None:
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    try:
        res = {"ok": True, **RUNNERS[args.part](args)}
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
