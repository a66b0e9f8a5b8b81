"""`openmoshi data clips MANIFEST --out DIR`: cut conversations into short mono clips (NAME.wav + NAME.txt), the
held-out speech that `openmoshi eval codec DIR` scores (the .txt is its reference text). See openmoshi/data/clips.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import error, non_negative_float, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST", help="a JSONL manifest of conversations with word alignments "
                        "(e.g. from `openmoshi data synth --split eval`)")
    parser.add_argument("--out", "-o", required=True, metavar="DIR",
                        help="folder for the clips (new or empty; not inside the dataset's folder)")
    parser.add_argument("--max-clips", type=positive_int, default=200, metavar="N", help="at most N clips (200)")
    parser.add_argument("--per-conversation", type=positive_int, default=2, metavar="N",
                        help="at most N clips from each conversation, Moshi's and the user's in turn (2)")
    parser.add_argument("--min-seconds", type=non_negative_float, default=1.0, metavar="S",
                        help="shortest utterance kept (1.0)")
    parser.add_argument("--pad", type=non_negative_float, default=0.25, metavar="S",
                        help="audio kept before and after the words (0.25)")
    parser.add_argument("--max-gap", type=positive_float, default=0.6, metavar="S",
                        help="a longer pause between words starts a new utterance (0.6)")


def main(args: argparse.Namespace) -> int:
    from ..audio import AudioError
    from ..data.clips import cut_clips
    from ..data.manifest import ManifestError

    manifest, out = Path(args.manifest).expanduser(), Path(args.out).expanduser()
    if not manifest.is_file():
        return error(f"manifest not found: {args.manifest}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return error(f"--out {args.out} exists and is not an empty folder (clips are written into a new folder)")
    if out.resolve().is_relative_to(manifest.resolve().parent):
        return error(f"--out {args.out} is inside the dataset's folder {manifest.parent}: choose a folder outside it")
    try:
        clips = cut_clips(manifest, out, max_clips=args.max_clips, per_conversation=args.per_conversation,
                          min_seconds=args.min_seconds, pad=args.pad, max_gap=args.max_gap)
    except (ManifestError, AudioError, OSError) as err:
        return error(str(err))
    roles = [p.stem.rsplit("_", 1)[1] for p in clips]
    print(f"{len(clips)} clips ({roles.count('moshi')} of Moshi, {roles.count('user')} of the user) in {out}; "
          f"score a codec on them with `openmoshi eval codec {out} --out REPORT --model FOLDER`")
    return 0
