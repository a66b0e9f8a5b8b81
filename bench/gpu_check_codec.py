"""The Mimi and training parts of bench/gpu_check.py (mimi, train_lm, train_lm_compile, train_codec)."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import traceback
from pathlib import Path

from gpu_check_lm import graphed, interleave


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
                "train.checkpoint_every=0", f"train.device={args.device}", "loss.phases.adversarial_start=0",
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
