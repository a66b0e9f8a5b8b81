"""Per-step latency of our LM generator against the reference `moshi` LMGen, same weights, same run.

Config: the real depth transformer (1024 wide, 6 layers, 16 heads, 8 steps) under a reduced temporal
transformer (1024 wide, 8 layers by default), vocabularies of the released model (32000 text, 2048 audio).
Both sample with the default settings (text 0.7/25, audio 0.8/250). Steps are interleaved one by one
(ours, reference, ours, ...) after a warm-up; we report medians per step and the ratio reference / ours.

    .venv/bin/python bench/lm.py [--threads 1 2] [--steps 40] [--layers 8] [--batch 1]
    .venv/bin/python bench/lm.py --full-7b   # random bf16 7B weights, a few steps of ours only (needs ~17 GB)
    .venv/bin/python bench/lm.py --compile --modes narrow   # our frame step: eager vs torch.compile (inductor)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's openmoshi (helpers shared with the tests: openmoshi.testing)

import torch  # noqa: E402

from openmoshi.inference.generator import LMGenerator  # noqa: E402
from openmoshi.lm.config import LMConfig  # noqa: E402


def bench_config(layers: int, narrow: bool = False) -> LMConfig:
    """The bench config; `narrow` keeps the structure (layers, steps, vocabularies) at width 64, which leaves
    mostly the per-op overhead (Python, dispatch, small kernels) instead of reading weights."""
    cfg = LMConfig.moshiko_7b().replace(dim=1024, num_layers=layers, num_heads=8, hidden=2816)
    if narrow:
        cfg = cfg.replace(dim=64, num_heads=4, hidden=96, depformer_dim=64, depformer_num_heads=4,
                          depformer_hidden=96)
    return cfg


def state_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def our_state_tensors(gen: LMGenerator):
    yield gen.cache
    for root in (gen.model.transformer, gen.model.depformer.transformer):
        for m in root.modules():
            st = getattr(m, "state", None)
            if st is not None:
                yield from (v for v in vars(st).values() if isinstance(v, torch.Tensor))


def ref_state_tensors(lm_gen):
    for m in lm_gen.lm_model.modules():
        st = getattr(m, "_streaming_state", None)
        cache = getattr(st, "kv_cache", None)
        if cache is not None:
            yield cache.cache
    yield lm_gen._streaming_state.cache


def fill_context(gen: LMGenerator, lm_gen) -> None:
    """Mark both temporal KV rings full (steady state past the first `context` steps, e.g. 4 min for the 7B)."""
    from moshi.modules.transformer import StreamingMultiheadAttention

    C = gen.cfg.context
    for m in gen.model.transformer.modules():
        st = getattr(m, "state", None)
        if st is not None and hasattr(st, "positions"):
            st.positions.copy_(torch.arange(C))
            st.offset.fill_(C)
    for m in lm_gen.lm_model.transformer.modules():
        if isinstance(m, StreamingMultiheadAttention):
            st = m._streaming_state
            st.kv_cache.end_offset.fill_(C)
            st.offset.fill_(C)
            st.offset_cpu = C


def run_pair(cfg: LMConfig, threads: int, steps: int, warmup: int, batch: int, full: bool,
             dtype: torch.dtype = torch.float32) -> dict:
    from moshi.models.lm import LMGen
    from moshi.models.lm import LMModel as RefLMModel

    from openmoshi.lm.checkpoint import load_state_dict
    from openmoshi.lm.model import LMModel
    from openmoshi.testing.kyutai import make_reference

    torch.set_num_threads(threads)
    ref = make_reference(cfg, RefLMModel, seed=0, dtype=dtype)
    ours = LMModel(cfg, dtype=dtype)
    load_state_dict(ours, ref.state_dict())
    ours.eval()
    user = torch.randint(0, cfg.card, (steps + warmup, batch, cfg.num_user_codebooks))
    lm_gen = LMGen(ref, use_sampling=True, temp=0.8, temp_text=0.7, top_k=250, top_k_text=25)
    t_ours, t_ref = [], []
    with lm_gen.streaming(batch), torch.no_grad(), LMGenerator(ours, batch, seed=0) as gen:
        if full:
            fill_context(gen, lm_gen)
        for i in range(steps + warmup):
            t0 = time.perf_counter()
            gen.step(user[i])
            t1 = time.perf_counter()
            lm_gen.step(user[i][:, :, None])
            t2 = time.perf_counter()
            if i >= warmup:
                t_ours.append(t1 - t0)
                t_ref.append(t2 - t1)
        mem_ours = state_bytes(our_state_tensors(gen))
        mem_ref = state_bytes(ref_state_tensors(lm_gen))
    params = sum(p.numel() * p.element_size() for p in ours.parameters())
    return {
        "ours_ms": 1e3 * statistics.median(t_ours), "ref_ms": 1e3 * statistics.median(t_ref),
        "state_ours_mb": mem_ours / 2**20, "state_ref_mb": mem_ref / 2**20, "params_mb": params / 2**20,
    }


def _fill_random(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # random weights, in place (no second copy)
            if p.dim() > 1:
                bound = 3**0.5 * p.shape[-1] ** -0.5  # uniform with variance 1 / fan_in
                p.uniform_(-bound, bound, generator=gen)
            else:
                p.fill_(1.0)


def full_7b(steps: int, threads: int, reference: bool) -> None:
    """Random bf16 7B weights (built on meta, materialised once), a few generator steps, peak RSS."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if reference:
        from moshi.models.lm import LMGen
        from moshi.models.lm import LMModel as RefLMModel

        from openmoshi.testing.kyutai import kyutai_kwargs

        with torch.device("meta"):
            model = RefLMModel(**kyutai_kwargs(LMConfig.moshiko_7b()), dtype=torch.bfloat16)
    else:
        from openmoshi.lm.checkpoint import build_empty

        model = build_empty(LMConfig.moshiko_7b(), dtype=torch.bfloat16)
    model = model.to_empty(device="cpu")
    _fill_random(model)
    model.eval()
    name = "reference" if reference else "ours"
    print(f"{name}: built random bf16 7B in {time.perf_counter() - t0:.1f}s")
    user = torch.zeros(1, 8, dtype=torch.long)
    times = []
    if reference:
        lm_gen = LMGen(model, use_sampling=True)
        with lm_gen.streaming(1), torch.no_grad():
            for _ in range(steps):
                t = time.perf_counter()
                lm_gen.step(user[:, :, None])
                times.append(time.perf_counter() - t)
    else:
        with LMGenerator(model, 1, seed=0) as g:
            for _ in range(steps):
                t = time.perf_counter()
                g.step(user)
                times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{name} 7B bf16, {threads} thread(s): median {statistics.median(times[1:]):.2f} s/step over "
          f"{steps - 1} steps (first {times[0]:.2f} s); peak RSS {peak:.1f} GiB")


def compile_pair(cfg: LMConfig, threads: int, steps: int, warmup: int, batch: int, backend: str) -> dict:
    """`LMModel.frame_step` (greedy) in static-shape mode, eager against torch.compile(backend), alternating step by
    step on the same stream (the outputs are the same), after a warm-up that includes the compilation."""
    from openmoshi.lm.model import LMModel
    from openmoshi.nn.attention import set_static_shapes
    from openmoshi.nn.streaming import streaming

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = LMModel(cfg).eval()
    _fill_random(model)
    set_static_shapes(model, True)

    def greedy(logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=-1)

    compiled = torch.compile(model.frame_step, backend=backend, fullgraph=True)
    tokens = torch.randint(0, cfg.card, (batch, cfg.num_streams, 1))
    tokens[:, 0] = 0
    cache = model.depformer.new_cache(batch)
    t_eager, t_comp = [], []
    with torch.no_grad(), streaming(model.transformer, batch):
        t0 = time.perf_counter()
        compiled(tokens, greedy, greedy, cache)
        compile_s = time.perf_counter() - t0
        for i in range(steps + warmup):
            t0 = time.perf_counter()
            model.frame_step(tokens, greedy, greedy, cache)
            t1 = time.perf_counter()
            compiled(tokens, greedy, greedy, cache)
            t2 = time.perf_counter()
            if i >= warmup:
                t_eager.append(t1 - t0)
                t_comp.append(t2 - t1)
    return {"eager_ms": 1e3 * statistics.median(t_eager), "compiled_ms": 1e3 * statistics.median(t_comp),
            "compile_s": compile_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--layers", type=int, default=8, help="temporal transformer layers")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--full-7b", action="store_true", help="random bf16 7B, ours (not in CI: ~16 GiB)")
    p.add_argument("--reference", action="store_true", help="with --full-7b: the reference instead of ours")
    p.add_argument("--modes", nargs="+", default=["fresh", "full", "narrow"], choices=["fresh", "full", "narrow"],
                   help="fresh: a new conversation; full: the temporal context window already full; "
                        "narrow: fresh at width 64 (per-op overhead only)")
    p.add_argument("--compile", action="store_true",
                   help="our frame step only: eager vs torch.compile (static-shape mode, greedy)")
    p.add_argument("--backend", default="inductor", help="with --compile: the torch.compile backend")
    args = p.parse_args()
    if args.compile:
        for mode in args.modes:
            for threads in args.threads:
                c = bench_config(args.layers, narrow=mode == "narrow")
                r = compile_pair(c, threads, args.steps, args.warmup, args.batch, args.backend)
                print(f"{mode:5s} threads {threads}: eager {r['eager_ms']:.1f} ms/step, {args.backend} "
                      f"{r['compiled_ms']:.1f} ms/step, ratio {r['eager_ms'] / r['compiled_ms']:.2f}x "
                      f"(first call with compilation {r['compile_s']:.0f} s)")
        return
    if args.full_7b:
        full_7b(max(args.steps, 2), args.threads[0], args.reference)
        return
    cfg = bench_config(args.layers)
    print(f"temporal {cfg.dim}x{cfg.num_layers} (context {cfg.context}), depth {cfg.depformer_dim}x"
          f"{cfg.depformer_num_layers} x {cfg.dep_q} steps, batch {args.batch}, {args.dtype}, {args.steps} steps")
    for mode in args.modes:
        for threads in args.threads:
            c = bench_config(args.layers, narrow=mode == "narrow")
            r = run_pair(c, threads, args.steps, args.warmup, args.batch, mode == "full", getattr(torch, args.dtype))
            print(f"{mode:5s} threads {threads}: ours {r['ours_ms']:.1f} ms/step, reference {r['ref_ms']:.1f} ms/step, "
                  f"ratio {r['ref_ms'] / r['ours_ms']:.2f}x | streaming state ours {r['state_ours_mb']:.1f} MiB, "
                  f"reference {r['state_ref_mb']:.1f} MiB | weights {r['params_mb']:.0f} MiB")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"peak RSS of this process: {peak:.0f} MiB (both models)")


if __name__ == "__main__":
    main()
