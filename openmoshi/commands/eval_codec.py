"""`openmoshi eval codec AUDIO --out REPORT`: score a Mimi on held-out audio at several numbers of codebooks.

AUDIO is a folder (every audio file in it, recursively) or one file. For each clip and each K of `-k`: encode,
decode, then bitrate, mel distance, SI-SDR, PESQ (wide band), STOI and the word error rate of the
reconstruction's transcript (Whisper tiny.en, offline) against the clip's sidecar `NAME.txt`, or against the
transcript of the original when there is none. REPORT/ gets `report.md`, `quality_vs_bitrate.png`,
`spectrogram.png` (the first clip: original and reconstructions), `metrics.json` and `samples/` (the first clip's
original and reconstructions as wav).

The model: `--weights FILE` (Kyutai's Mimi file or ours; `--preset` its size), or `--model FOLDER_OR_REPO` in
Kyutai's layout (its config.json may give a Mimi config); neither: Kyutai's Mimi from the hub.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_threads_argument, apply_threads, error, positive_int

FLAGS = {"mimi": "--weights", "model": "--model"}


def _ks(text: str) -> list[int] | None:
    if text == "auto":
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"numbers of codebooks must be >= 1, got {text!r}")
    return sorted(set(values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..codec.presets import MIMI_PRESETS  # no torch import

    parser.add_argument("audio", metavar="AUDIO", help="a folder of held-out audio files (or one file); a sidecar "
                        "NAME.txt next to NAME.wav gives its reference text")
    parser.add_argument("--out", "-o", required=True, metavar="REPORT", help="folder for the report")
    parser.add_argument("--num-codebooks", "-k", type=_ks, default=None, metavar="K[,K...]",
                        help="numbers of codebooks to evaluate (default: 1, 2, 4, ... up to all of the model's)")
    parser.add_argument("--weights", default=None, metavar="FILE.safetensors",
                        help="Mimi weights (Kyutai's tokenizer-e351c8d8-checkpoint125.safetensors or ours)")
    parser.add_argument("--preset", default=None, choices=list(MIMI_PRESETS),
                        help="model size of --weights (default mimi; with --model: its config.json)")
    parser.add_argument("--model", default=None, metavar="FOLDER_OR_REPO",
                        help="a folder or Hugging Face repo in Kyutai's layout (its Mimi file is used)")
    parser.add_argument("--revision", default=None, help="hub revision of --model")
    parser.add_argument("--no-wer", action="store_true", help="skip the word error rate (no speech recogniser)")
    parser.add_argument("--max-files", type=positive_int, default=None, metavar="N", help="only the first N files")
    add_threads_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load(args: argparse.Namespace):
    from ..codec.checkpoint import load_mimi
    from ..codec.presets import mimi_config_from_overrides, mimi_preset
    from ..lm.config import DEFAULT_REPO
    from ..model_files import resolve_model_files

    if args.model is None and args.weights is None:
        print("fetching Kyutai's Mimi weights from the Hugging Face hub...", file=sys.stderr)
    files = resolve_model_files(args.model, mimi_weight=args.weights, revision=args.revision, roles=("mimi",),
                                flags=FLAGS, default=DEFAULT_REPO)
    if args.preset is not None:
        cfg = mimi_preset(args.preset)
    else:
        cfg = mimi_config_from_overrides(files.mimi_overrides)
    name = Path(args.weights).name if args.weights else f"{files.source} ({files.mimi.name})"
    from ..checkpoint import CheckpointError

    try:
        return load_mimi(files.mimi, cfg), name
    except CheckpointError as err:
        size = args.preset or "config.json's"
        raise ValueError(f"{err}\n(the weights do not fit the {size} Mimi: is --preset right?)") from None


def _outputs(out: Path, stem: str, ks: list[int]) -> list[tuple[str, Path, tuple[str, ...]]]:
    names = [("report.md", ".md"), ("metrics.json", ".json"), ("quality_vs_bitrate.png", ".png"),
             ("spectrogram.png", ".png"), (f"samples/{stem}_original.wav", ".wav")]
    names += [(f"samples/{stem}_k{k}.wav", ".wav") for k in ks]
    return [("the report file", out / n, (s,)) for n, s in names]


def main(args: argparse.Namespace) -> int:
    from ..eval.codec_report import find_audio
    from ..io_safety import check_outputs

    source, out = Path(args.audio).expanduser(), Path(args.out).expanduser()
    try:
        files = find_audio(source)[:args.max_files]
        if source.is_dir() and out.resolve().is_relative_to(source.resolve()):
            raise ValueError(f"--out {args.out} is inside the audio folder {args.audio}: its samples would be "
                             "evaluated as clips next time; choose a folder outside it")
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {args.out} exists and is not a folder")
        check_outputs(_outputs(out, files[0].stem, args.num_codebooks or []),
                      [("an audio file", f) for f in files] + [("--weights", args.weights)])
        if args.weights and not Path(args.weights).is_file():
            raise ValueError(f"weights file not found: {args.weights}")
        apply_threads(args.threads)
        mimi, name = _load(args)
        qcfg = mimi.cfg.quantizer
        ks = args.num_codebooks or [k for k in (1, 2, 4, 8, 16, 32, 64) if k < qcfg.num_codebooks]
        ks = sorted(set(ks) | ({qcfg.num_codebooks} if args.num_codebooks is None else set()))
        bad = [k for k in ks if not qcfg.num_semantic <= k <= qcfg.num_codebooks]
        if bad:
            raise ValueError(f"--num-codebooks {bad} not in {qcfg.num_semantic}..{qcfg.num_codebooks} for this Mimi")
        asr = None
        if not args.no_wer:
            from ..eval.asr import WhisperASR

            asr = WhisperASR(threads=args.threads or 1)
        return _run(args, mimi, name, files, ks, asr, out)
    except (OSError, ValueError, RuntimeError) as e:  # AudioError, OutputError, CheckpointError, ModelFilesError
        return error(str(e))


def _run(args: argparse.Namespace, mimi, name: str, files: list[Path], ks: list[int], asr, out: Path) -> int:
    import numpy as np
    import torch

    from ..audio import read_audio, write_wav
    from ..eval import codec_report as cr
    from ..io_safety import write_bytes, write_text
    from .codec import decode_codes, encode_file

    def codec(audio: np.ndarray, k: int) -> np.ndarray:
        with torch.inference_mode():
            return decode_codes(mimi, encode_file(mimi, audio, k, False, False), False)

    kept: dict[int | None, np.ndarray] = {}
    report = cr.evaluate(files, ks, codec, mimi.sample_rate, mimi.frame_rate, mimi.cfg.quantizer.codebook_size,
                         name, lambda p: read_audio(p, mimi.sample_rate), asr, progress=not args.no_progress,
                         keep_audio=lambda stem, k, a: kept.__setitem__(k, a))
    stem = files[0].stem
    for k, audio in kept.items():
        write_wav(out / "samples" / f"{stem}_{'original' if k is None else f'k{k}'}.wav", audio, mimi.sample_rate)
    shown = {k: kept[k] for k in sorted({min(ks), max(ks)})}
    write_bytes(out / "spectrogram.png", cr.plot_spectrograms(files[0].name, kept[None], shown, mimi.sample_rate))
    write_bytes(out / "quality_vs_bitrate.png", cr.plot_quality(report))
    write_text(out / "metrics.json", cr.report_json(report))
    write_text(out / "report.md", cr.report_markdown(report, files[0].name))
    for s in report.summary:
        wer = "" if s.wer is None else f", WER {s.wer:.3f}"
        print(f"K={s.num_codebooks:2d} ({s.bitrate / 1000:.2f} kbps): mel {s.means['mel_distance']:.3f}, "
              f"SI-SDR {s.means['si_sdr']:.2f} dB, PESQ {s.means['pesq']:.2f}, STOI {s.means['stoi']:.3f}{wer}")
    print(f"report: {out / 'report.md'}")
    return 0
