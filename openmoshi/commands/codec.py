"""`openmoshi codec encode|decode|demo`: audio file <-> Mimi codes in an .npz file (demo: codec_demo.py).

encode: any audio file soundfile reads (any rate: resampled to 24 kHz; stereo: mixed down with a notice) ->
  npz with `codes` int32 [K, F] (the last partial frame zero-padded) and `num_samples` (the 24 kHz length).
  Batch and `--streaming` (one 80 ms frame per call, as a live stream would) give the same codes.
decode: npz -> 24 kHz mono 16-bit wav, trimmed to `num_samples` when the file has it.

Everything the user gives is checked before the model loads: the output path (suffix, folder, not an input:
io_safety.check_outputs), the input file (audio, or an npz of valid codes), --num-codebooks. Outputs are written
atomically.

Long inputs are processed in chunks of whole frames through the streaming path (identical output, bounded
memory) with a progress bar.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import codec_demo
from .common import add_threads_argument, apply_threads, error

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
    demo = sub.add_parser("demo", help="a streaming round trip of the bundled recording with Kyutai's Mimi",
                          description="a streaming round trip of the bundled recording with Kyutai's Mimi")
    codec_demo.add_arguments(demo)
    for p in (enc, dec):
        p.add_argument("--weights", required=True, metavar="FILE.safetensors",
                       help="Mimi weights (Kyutai's tokenizer-e351c8d8-checkpoint125.safetensors or ours)")
        p.add_argument("--preset", default=DEFAULT_MIMI_PRESET, choices=list(MIMI_PRESETS),
                       help="model size the weights are for (tiny: tests only)")
        add_threads_argument(p)
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


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip file's first record, or an empty zip's end record
_NPZ_HINT = "expected an .npz written by `openmoshi codec encode` (`codes` [K, F], `num_samples`)"


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file (never pickled objects), or ValueError saying what the file is instead."""
    if not path.exists():
        raise ValueError(f"codes file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file; {_NPZ_HINT}")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_NPY_MAGIC):
        raise ValueError(f"{path} is a single .npy array, not an .npz; {_NPZ_HINT}")
    if not head.startswith(_ZIP_MAGICS):
        raise ValueError(f"{path} is not an .npz file; {_NPZ_HINT}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except ValueError as e:
        if "pickle" in str(e):  # object arrays: data, not codes, and never unpickled (it could run code)
            raise ValueError(f"{path} holds Python objects, not integer arrays; {_NPZ_HINT}") from None
        raise ValueError(f"cannot read {path} as .npz ({e})") from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError) as e:
        raise ValueError(f"cannot read {path} as .npz: damaged or truncated ({type(e).__name__}: {e})") from None


def read_codes(path: Path, num_codebooks_max: int, cardinality: int, frame_size: int | None = None,
               sample_rate: int | None = None) -> tuple[np.ndarray, int | None]:
    """Validate an npz of codes: (`codes` [K, F] int64, `num_samples` or None).

    `num_samples` must be one integer in 1..F * frame_size (the audio the frames hold) when `frame_size` is given;
    a `sample_rate` entry must match `sample_rate` when given.
    """
    data = _load_npz(path)
    if "codes" not in data:
        raise ValueError(f"{path} has no `codes` array (found: {', '.join(data) or 'nothing'})")
    codes = data["codes"]
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{path}: `codes` must be an integer array [K, F], got {codes.dtype} {codes.shape}")
    if not 1 <= codes.shape[0] <= num_codebooks_max:
        raise ValueError(f"{path}: {codes.shape[0]} codebooks, expected 1..{num_codebooks_max}")
    if codes.size and (codes.min() < 0 or codes.max() >= cardinality):
        raise ValueError(f"{path}: codes must be in 0..{cardinality - 1}, got {codes.min()}..{codes.max()}")
    if codes.shape[1] == 0:
        raise ValueError(f"{path}: no frames to decode")
    num_samples = None
    for name in ("num_samples", "sample_rate"):
        if name in data and (data[name].ndim != 0 or not np.issubdtype(data[name].dtype, np.integer)):
            raise ValueError(f"{path}: `{name}` must be one integer, got {data[name].dtype} {data[name].shape}")
    if "sample_rate" in data and sample_rate is not None and int(data["sample_rate"]) != sample_rate:
        raise ValueError(f"{path}: codes of {int(data['sample_rate'])} Hz audio, this Mimi is {sample_rate} Hz")
    if "num_samples" in data:
        num_samples = int(data["num_samples"])
        most = codes.shape[1] * frame_size if frame_size else None
        if num_samples < 1 or (most is not None and num_samples > most):
            raise ValueError(f"{path}: num_samples {num_samples} does not fit the codes: {codes.shape[1]} frames "
                             f"hold 1..{most if most is not None else 'n'} samples")
    return codes.astype(np.int64), num_samples


def main(args: argparse.Namespace) -> int:
    from ..audio import read_audio, write_wav
    from ..io_safety import check_outputs, save_npz

    if args.action == "demo":
        return codec_demo.main(args)
    progress = not args.no_progress
    encoding = args.action == "encode"
    try:
        suffix = ".npz" if encoding else ".wav"
        check_outputs([("the output", args.output, (suffix,))],
                      [("the input", args.input), ("--weights", args.weights)])
        from ..codec.mimi import MimiConfig  # (torch) after the instant checks

        cfg = {"mimi": MimiConfig.mimi, "tiny": MimiConfig.tiny}[args.preset]()
        qcfg = cfg.quantizer
        # everything the user gave is checked before the (slow) model load
        if encoding:
            if not 1 <= args.num_codebooks <= qcfg.num_codebooks:
                raise ValueError(f"--num-codebooks must be in 1..{qcfg.num_codebooks}, got {args.num_codebooks}")
            wav = read_audio(args.input, cfg.sample_rate)
        else:
            codes, num_samples = read_codes(Path(args.input), qcfg.num_codebooks, qcfg.codebook_size,
                                            cfg.frame_size, cfg.sample_rate)
        import torch

        if not Path(args.weights).is_file():  # before building the model
            raise ValueError(f"weights file not found: {args.weights}")
        from ..codec.checkpoint import load_mimi

        apply_threads(args.threads)
        mimi = load_mimi(args.weights, args.preset)
        if encoding:
            with torch.inference_mode():
                codes = encode_file(mimi, wav, args.num_codebooks, args.streaming, progress)
            save_npz(args.output, codes=codes.astype(np.int32), num_samples=np.int64(len(wav)),
                     sample_rate=np.int64(mimi.sample_rate))
            print(f"{args.input}: {len(wav) / mimi.sample_rate:.2f} s -> codes {list(codes.shape)} "
                  f"({codes.shape[0]} codebooks x {codes.shape[1]} frames) in {args.output}")
        else:
            with torch.inference_mode():
                audio = decode_codes(mimi, codes, progress)
            if num_samples is not None:
                audio = audio[:num_samples]
            write_wav(args.output, audio, mimi.sample_rate)
            print(f"{args.input}: codes {list(codes.shape)} -> {len(audio) / mimi.sample_rate:.2f} s "
                  f"of 24 kHz audio in {args.output}")
    except (OSError, ValueError) as e:  # AudioError, OutputError, CheckpointError: the user's input
        return error(str(e))
    return 0
