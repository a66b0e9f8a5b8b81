"""`openmoshi data check MANIFEST`: validate a dataset, list every problem (one line each), print a summary.

Exit status 0 when the dataset is clean, 1 when any problem was found (2: usage). Only audio headers are read.
"""

from __future__ import annotations

import argparse

from .common import non_negative_float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..data.check import DEFAULT_TOLERANCE

    parser.add_argument("manifest", metavar="MANIFEST",
                        help="a JSONL manifest ({\"path\": ..., \"duration\": ...} per line), or a .txt list of "
                             "text files")
    parser.add_argument("--tolerance", type=non_negative_float, default=DEFAULT_TOLERANCE, metavar="SECONDS",
                        help=f"allowed gap between a declared duration and the file's, and how far a word may end "
                             f"past the audio (default {DEFAULT_TOLERANCE})")
    parser.add_argument("--quiet", "-q", action="store_true", help="problems only, no summary")


def main(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset

    result = check_dataset(args.manifest, args.tolerance)
    for problem in result.problems:
        print(problem)
    if not args.quiet:
        for line in result.summary.lines():
            print(line)
        unusable = sum(1 for p in result.problems if p.line is not None)  # manifest lines that are no entry
        total = len(result.entries) + unusable
        usable = len(result.entries) - len(result.bad_entries)
        verdict = "OK" if result.ok else f"{len(result.problems)} problems; {usable} of {total} entries usable"
        print(f"{total} entries: {verdict}")
    return 0 if result.ok else 1
