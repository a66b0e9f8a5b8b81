"""The LM parts of bench/gpu_check.py (lm_step, lm_parity, session) and the helpers all parts share: timing
(`interleave`), CUDA graph capture (`graphed`) and a reference / ours LM pair made on the device."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import traceback
from pathlib import Path


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
