"""`openmoshi codec encode|decode`: audio file <-> Mimi codes in an .npz file.

encode: any audio file soundfile reads (any rate: resampled to 24 kHz; stereo: mixed down with a notice) ->
  npz with `codes` int32 [K, F] (the last partial frame zero-padded) and `num_samples` (the 24 kHz length).
  Batch and `--streaming` (one 80 ms frame per call, as a live stream would) give the same codes.
decode: npz -> 24 kHz mono 16-bit wav, trimmed to `num_samples` when the file has it.

Long inputs are processed in chunks of whole frames through the streaming path (identical output, bounded
memory) with a progress bar.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

# Batch mode handles up to this many frames in one call; beyond, chunked streaming (same result, flat memory).
MAX_BATCH_FRAMES = 750  # 60 s
CHUNK_FRAMES = 25  # 2 s per call when chunking
PROGRESS_FRAMES = 375  # show a progress bar from 30 s on


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..codec.presets import DEFAULT_MIMI_PRESET, MIMI_PRESETS  # the one preset registry (no torch import)

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    enc = sub.add_parser("encode", help="audio file -> codes (.npz)", description="audio file -> codes (.npz)")
    enc.add_argument("input", metavar="IN.wav", help="audio file (wav, flac, ogg...; any rate and channels)")
    enc.add_argument("output", metavar="OUT.npz", help="codes [K, F] and num_samples")
    enc.add_argument("--num-codebooks", "-k", type=int, default=8, metavar="K", help="1..32 (default 8)")
    enc.add_argument("--streaming", action="store_true", help="encode one 80 ms frame per call, as live")
    dec = sub.add_parser("decode", help="codes (.npz) -> 24 kHz wav", description="codes (.npz) -> 24 kHz wav")
    dec.add_argument("input", metavar="IN.npz", help="a file written by `openmoshi codec encode`")
    dec.add_argument("output", metavar="OUT.wav", help="24 kHz mono 16-bit wav")
    for p in (enc, dec):
        p.add_argument("--weights", required=True, metavar="FILE.safetensors",
                       help="Mimi weights (Kyutai's tokenizer-e351c8d8-checkpoint125.safetensors or ours)")
        p.add_argument("--preset", default=DEFAULT_MIMI_PRESET, choices=list(MIMI_PRESETS),
                       help="model size the weights are for (tiny: tests only)")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _progress(total: int, enabled: bool, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def encode_file(mimi, wav: np.ndarray, num_codebooks: int, stream: bool, progress: bool) -> np.ndarray:
    """wav [T] float32 at 24 kHz -> codes [K, ceil(T / frame)] (int64)."""
    import torch

    from ..nn.streaming import streaming

    frame = mimi.frame_size
    frames = -(-len(wav) // frame)
    x = torch.from_numpy(wav)[None, None]
    if not stream and frames <= MAX_BATCH_FRAMES:
        return mimi.encode(x, num_codebooks)[0].numpy()
    x = torch.nn.functional.pad(x, (0, frames * frame - len(wav)))  # the batch mode's zero padding
    step = 1 if stream else CHUNK_FRAMES
    out = []
    with streaming(mimi, 1), _progress(frames, progress and frames >= PROGRESS_FRAMES, "frame") as bar:
        for start in range(0, frames, step):
            n = min(step, frames - start)
            out.append(mimi.encode(x[..., start * frame:(start + n) * frame], num_codebooks))
            bar.update(n)
    return torch.cat(out, -1)[0].numpy()


def decode_codes(mimi, codes: np.ndarray, progress: bool) -> np.ndarray:
    """codes [K, F] -> audio [F * frame] float32."""
    import torch

    from ..nn.streaming import streaming

    c = torch.from_numpy(codes.astype(np.int64))[None]
    frames = c.shape[-1]
    if frames <= MAX_BATCH_FRAMES:
        return mimi.decode(c)[0, 0].float().numpy()
    out = []
    with streaming(mimi, 1), _progress(frames, progress and frames >= PROGRESS_FRAMES, "frame") as bar:
        for start in range(0, frames, CHUNK_FRAMES):
            out.append(mimi.decode(c[..., start:start + CHUNK_FRAMES])[0, 0].float())
            bar.update(min(CHUNK_FRAMES, frames - start))
    return torch.cat(out).numpy()


def read_codes(path: Path, num_codebooks_max: int, cardinality: int) -> tuple[np.ndarray, int | None]:
    """Validate an npz of codes: (`codes` [K, F] int64, `num_samples` or None)."""
    if not path.is_file():
        raise ValueError(f"codes file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "codes" not in data:
                raise ValueError(f"{path} has no `codes` array (found: {', '.join(data.files) or 'nothing'})")
            codes = data["codes"]
            num_samples = int(data["num_samples"]) if "num_samples" in data else None
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read {path} as .npz: {e}") from e
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{path}: `codes` must be an integer array [K, F], got {codes.dtype} {codes.shape}")
    if not 1 <= codes.shape[0] <= num_codebooks_max:
        raise ValueError(f"{path}: {codes.shape[0]} codebooks, expected 1..{num_codebooks_max}")
    if codes.size and (codes.min() < 0 or codes.max() >= cardinality):
        raise ValueError(f"{path}: codes must be in 0..{cardinality - 1}, got {codes.min()}..{codes.max()}")
    if codes.shape[1] == 0:
        raise ValueError(f"{path}: no frames to decode")
    return codes.astype(np.int64), num_samples


def main(args: argparse.Namespace) -> int:
    import torch

    from ..audio import AudioError, read_audio, write_wav
    from ..codec.checkpoint import CheckpointError, load_mimi

    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    try:
        if args.action == "encode":
            wav = read_audio(args.input)  # errors before the (slow) model load
        mimi = load_mimi(args.weights, args.preset)
        qcfg = mimi.cfg.quantizer
        if args.action == "encode":
            if not 1 <= args.num_codebooks <= qcfg.num_codebooks:
                raise ValueError(f"--num-codebooks must be in 1..{qcfg.num_codebooks}, got {args.num_codebooks}")
            with torch.inference_mode():
                codes = encode_file(mimi, wav, args.num_codebooks, args.streaming, progress)
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.output, codes=codes.astype(np.int32), num_samples=np.int64(len(wav)),
                     sample_rate=np.int64(mimi.sample_rate))
            print(f"{args.input}: {len(wav) / mimi.sample_rate:.2f} s -> codes {list(codes.shape)} "
                  f"({codes.shape[0]} codebooks x {codes.shape[1]} frames) in {args.output}")
        else:
            codes, num_samples = read_codes(Path(args.input), qcfg.num_codebooks, qcfg.codebook_size)
            with torch.inference_mode():
                audio = decode_codes(mimi, codes, progress)
            if num_samples is not None:
                audio = audio[:num_samples]
            write_wav(args.output, audio, mimi.sample_rate)
            print(f"{args.input}: codes {list(codes.shape)} -> {len(audio) / mimi.sample_rate:.2f} s "
                  f"of 24 kHz audio in {args.output}")
    except (AudioError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
