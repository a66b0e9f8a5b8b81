"""`openmoshi data synth`: generate spoken two-party conversations offline (docs/synth.md).

Stereo 24 kHz wavs (channel 0 = Moshi, channel 1 = the user) with word alignments in sidecar JSONs and a JSONL
manifest: the dataset format of `openmoshi data prepare` / `train lm`. Seeded and reproducible, resumable (run the
same command again to finish or extend a set), `--workers` processes. No torch needed.
"""

from __future__ import annotations

import argparse
import sys

from .common import error, non_negative_int, positive_float, positive_int, seed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", help="output folder (created; a folder made by this command is "
                        "resumed or extended)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--hours", type=positive_float, metavar="H", help="generate conversations until H hours")
    size.add_argument("--conversations", type=positive_int, metavar="N", help="generate N conversations")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the whole set (default 0)")
    parser.add_argument("--split", choices=("train", "eval"), default="train",
                        help="which question instances are asked: train, or the held-out eval ones (default train)")
    parser.add_argument("--voices", default="all", metavar="LIST",
                        help="the user's voices: comma-separated names (festival:kal_diphone, flite:rms, "
                        "espeak:en-gb+m3, piper:joe) or engines (festival, flite, espeak, piper), or all "
                        "(default: all that work here). Moshi always speaks festival's cmu_us_slt_arctic_hts")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N", help="processes (default 1)")
    parser.add_argument("--exchanges", type=non_negative_int, nargs=2, default=(2, 6), metavar=("MIN", "MAX"),
                        help="question or small-talk exchanges per conversation (default 2 6)")
    parser.add_argument("--list-voices", action="store_true", help="list the voices that work here and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from ..data.synth.generate import SynthError, SynthSettings, generate
    from ..data.synth.voices import MOSHI_VOICE, VoiceError, resolve_user_voices, working

    if not args.list_voices:  # the cheap checks first: asking voices to speak takes seconds
        if args.out is None:
            return error("--out DIR is required")
        if args.hours is None and args.conversations is None:
            return error("give --hours H or --conversations N")
        if args.exchanges[0] > args.exchanges[1]:
            return error(f"--exchanges {args.exchanges[0]} {args.exchanges[1]}: MIN must not exceed MAX")
    try:
        good, bad = resolve_user_voices(args.voices)
    except VoiceError as e:
        return error(str(e))
    if args.list_voices:
        print(f"moshi: {MOSHI_VOICE} ({'works' if working(MOSHI_VOICE) else 'NOT installed'})")
        for v in good:
            print(f"user: {v}")
        for v in bad:
            print(f"not working here: {v}")
        return 0
    lo, hi = args.exchanges
    if not working(MOSHI_VOICE):
        return error(f"Moshi's voice {MOSHI_VOICE} does not work here: apt-get install festival festvox-us-slt-hts")
    if not good:
        return error(f"none of the user voices {args.voices!r} works here (not installed: {', '.join(bad[:5])}...)")
    if bad:
        print(f"note: {len(bad)} of the requested user voices do not work here and are left out "
              f"({', '.join(bad[:4])}{'...' if len(bad) > 4 else ''})", file=sys.stderr)
    settings = SynthSettings(seed=args.seed, split=args.split, moshi_voice=MOSHI_VOICE, user_voices=tuple(good),
                             min_exchanges=lo, max_exchanges=hi)
    try:
        generate(args.out, settings, conversations=args.conversations, hours=args.hours, workers=args.workers,
                 progress=not args.no_progress, log=lambda m: print(m, file=sys.stderr))
    except (SynthError, VoiceError, OSError) as e:
        return error(str(e))
    except KeyboardInterrupt:
        return error("interrupted: run the same command again to resume", 130)
    return 0
