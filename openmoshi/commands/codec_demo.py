"""`openmoshi codec demo`: a streaming Mimi round trip with Kyutai's Mimi (the main job before nanomoshi).

A streaming Mimi round trip of the bundled example recording (or `--input`) with Kyutai's released Mimi
weights: the audio goes through encode -> codes -> decode one 80 ms frame at a time, as in a live call. It
writes the reconstruction and prints the codes' shape, the bitrate and the time per frame.

Weights: `--weights FILE`, else Kyutai's file from the Hugging Face hub through the shared resolver
(`openmoshi.model_files`: its cache alone when offline). Offline without a cached copy it says how to provide
them and exits with status 1. The output path, the input and
--num-codebooks are checked before anything is fetched or loaded; the output never replaces the input and is
written atomically. A progress bar follows the frames.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from ..codec.presets import DEFAULT_MIMI_PRESET, MIMI_PRESETS
from ..lm.config import DEFAULT_MIMI_NAME as MIMI_FILE
from ..lm.config import DEFAULT_REPO
from .common import add_threads_argument, apply_threads, error

DEMO_FLAGS = {"mimi": "--weights", "model": ""}  # no --model here: the messages name --weights only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None, metavar="FILE.safetensors",
                        help=f"Mimi weights (default: {MIMI_FILE} from {DEFAULT_REPO} on the hub)")
    parser.add_argument("--input", "-i", default=None, metavar="AUDIO", help="default: the bundled example")
    parser.add_argument("--output", "-o", default="mimi_roundtrip.wav", metavar="WAV",
                        help="the reconstruction (default: %(default)s)")
    parser.add_argument("--num-codebooks", "-k", type=int, default=8, metavar="K", help="1..32 (default 8)")
    parser.add_argument("--preset", default=DEFAULT_MIMI_PRESET, choices=list(MIMI_PRESETS), help=argparse.SUPPRESS)
    add_threads_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def find_weights(weights: str | None) -> Path:
    """`--weights`, else Kyutai's Mimi file from the hub (the shared resolver: its cache alone when offline).

    Raises ModelFilesError listing what is missing and how to provide it.
    """
    from ..model_files import resolve_model_files

    files = resolve_model_files(None, mimi_weight=weights, roles=("mimi",), flags=DEMO_FLAGS, default=DEFAULT_REPO)
    assert files.mimi is not None
    return files.mimi


def main(args: argparse.Namespace) -> int:
    from ..audio import example_recording, read_audio, write_wav
    from ..io_safety import check_outputs

    source = Path(args.input) if args.input else example_recording()
    try:
        check_outputs([("--output", args.output, (".wav",))], [("--input", source), ("--weights", args.weights)])
        from ..codec.presets import mimi_preset  # (torch) after the instant checks

        cfg = mimi_preset(args.preset)
        qcfg = cfg.quantizer
        if not 1 <= args.num_codebooks <= qcfg.num_codebooks:
            raise ValueError(f"--num-codebooks must be in 1..{qcfg.num_codebooks}, got {args.num_codebooks}")
        wav = read_audio(source, cfg.sample_rate)
        if not args.weights:
            print(f"fetching Mimi weights ({MIMI_FILE}) from the Hugging Face hub...", file=sys.stderr)
        weights = find_weights(args.weights)
        from ..codec.checkpoint import load_mimi

        apply_threads(args.threads)
        mimi = load_mimi(weights, args.preset)
    except (OSError, ValueError) as e:  # AudioError, OutputError, CheckpointError: the user's input
        return error(str(e))
    all_codes, out, times = round_trip(mimi, wav, args.num_codebooks, progress=not args.no_progress)
    try:
        write_wav(args.output, out, mimi.sample_rate)
    except OSError as e:
        return error(f"cannot write {args.output}: {e}")

    frames = all_codes.shape[-1]
    frame = mimi.frame_size
    bits = args.num_codebooks * math.log2(qcfg.codebook_size) * mimi.frame_rate
    ms = sorted(times)[len(times) // 2] * 1000
    print(f"input      {source} ({len(wav) / mimi.sample_rate:.2f} s at {mimi.sample_rate} Hz)")
    print(f"weights    {weights}")
    print(f"codes      {list(all_codes.shape)} ({args.num_codebooks} codebooks x {frames} frames at "
          f"{mimi.frame_rate:g} Hz), {bits / 1000:.2f} kbps")
    print(f"streaming  {ms:.1f} ms per {1000 * frame / mimi.sample_rate:.0f} ms frame (median, encode + decode)")
    print(f"output     {args.output}")
    return 0


def round_trip(mimi, wav, num_codebooks: int, progress: bool = True):
    """Streaming encode + decode of mono `wav` [T], one frame per call: (codes [K, F], audio [T], seconds per
    frame)."""
    import torch
    from tqdm import tqdm

    from ..nn.streaming import streaming

    frame = mimi.frame_size
    frames = -(-len(wav) // frame)
    x = torch.nn.functional.pad(torch.from_numpy(wav), (0, frames * frame - len(wav)))[None, None]
    codes, audio, times = [], [], []
    bar = tqdm(total=frames, unit="frame", desc="codec demo", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    with torch.inference_mode(), streaming(mimi, 1):
        for i in range(frames):
            start = time.perf_counter()
            c = mimi.encode(x[..., i * frame:(i + 1) * frame], num_codebooks)
            audio.append(mimi.decode(c))
            times.append(time.perf_counter() - start)
            codes.append(c)
            bar.update(1)
    bar.close()
    return torch.cat(codes, -1)[0], torch.cat(audio, -1)[0, 0, :len(wav)].float().numpy(), times
