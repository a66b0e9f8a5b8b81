"""`openmoshi data prepare MANIFEST --out DIR`: Mimi codes and Moshi's text stream, computed once, into shards.

The model's own Mimi and tokenizer (`--model` folder or hub repo, or `--mimi-weight`/`--tokenizer` files) are
used; the LM itself is never loaded. Resumable (run the same command again: finished chunks are skipped), split
across processes or machines sharing DIR with `--rank/--world-size` (defaults: the RANK / WORLD_SIZE variables
torchrun sets, else 0 and 1). The dataset is checked first; docs/data.md describes the output.
"""

from __future__ import annotations

import argparse
import os

from .common import (
    add_threads_argument,
    apply_threads,
    device,
    error,
    non_negative_int,
    positive_float,
    positive_int,
)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..lm.config import DEFAULT_REPO

    parser.add_argument("manifest", metavar="MANIFEST", help="a JSONL manifest, or a .txt list of text files")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output folder (default: MANIFEST's folder/<stem>.prepared, where `train lm --data` "
                             "looks)")
    g = parser.add_argument_group("model (its Mimi and tokenizer)")
    g.add_argument("--model", "--hf-repo", dest="model", default=None, metavar="FOLDER_OR_REPO",
                   help=f"a local folder or a Hugging Face repo in Kyutai's layout (default {DEFAULT_REPO})")
    g.add_argument("--revision", default=None, help="hub revision of --model")
    g.add_argument("--mimi-weight", default=None, metavar="FILE", help="Mimi safetensors, overrides the model's")
    g.add_argument("--tokenizer", default=None, metavar="FILE", help="SentencePiece model, overrides the model's")
    g.add_argument("--config", default=None, metavar="FILE", help="config.json, overrides the model's")
    g.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:N (default: cuda when available; "
                                                               "with several ranks, cuda:RANK mod GPUs)")
    w = parser.add_argument_group("work")
    w.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="files encoded together (8)")
    w.add_argument("--max-batch-seconds", type=positive_float, default=1200.0, metavar="S",
                   help="audio per batch, all channels together (1200; bounds memory)")
    w.add_argument("--chunk-size", type=positive_int, default=64, metavar="N",
                   help="manifest entries per shard: the unit of resumption and of the split across ranks (64)")
    w.add_argument("--block-frames", type=positive_int, default=125, metavar="N",
                   help="frames per Mimi call (125 = 10 s): bounds memory for long files; smaller is slower")
    w.add_argument("--rank", type=non_negative_int, default=None, help="this process's share (default $RANK or 0)")
    w.add_argument("--world-size", type=positive_int, default=None,
                   help="processes sharing the work (default $WORLD_SIZE or 1)")
    w.add_argument("--skip-invalid", action="store_true",
                   help="leave out the entries `data check` finds a problem with (default: refuse the dataset)")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_argument(w)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..audio import AudioError
    from ..data.manifest import ManifestError
    from ..data.prepare import PrepareError, PrepareOptions, default_out, load_codec, prepare
    from ..data.shards import PreparedDataError
    from ..lm.config import DEFAULT_REPO
    from ..lm.text import TokenizerError
    from ..model_files import ModelFilesError, resolve_model_files

    rank = args.rank if args.rank is not None else _env_int("RANK", 0)
    world = args.world_size if args.world_size is not None else _env_int("WORLD_SIZE", 1)
    if not 0 <= rank < world:
        return error(f"--rank {rank} must be below --world-size {world}", 2)
    out = Path(args.out).expanduser() if args.out else default_out(args.manifest)
    if out.resolve() == Path(args.manifest).expanduser().resolve():
        return error(f"--out {out} is the manifest itself")
    apply_threads(args.threads)
    try:
        options = PrepareOptions(chunk_size=args.chunk_size, batch_size=args.batch_size,
                                 max_batch_seconds=args.max_batch_seconds, block_frames=args.block_frames,
                                 rank=rank, world_size=world, skip_invalid=args.skip_invalid,
                                 progress=not args.no_progress)
        files = resolve_model_files(args.model, mimi_weight=args.mimi_weight, tokenizer=args.tokenizer,
                                    config=args.config, revision=args.revision, roles=("mimi", "tokenizer"),
                                    default=DEFAULT_REPO)
        dev = args.device
        if dev is None and world > 1:
            import torch

            if torch.cuda.is_available():
                dev = f"cuda:{rank % torch.cuda.device_count()}"
        codec = load_codec(files, dev)
        report = prepare(args.manifest, out, codec, options)
    except (ModelFilesError, ManifestError, PrepareError, PreparedDataError, AudioError, TokenizerError,
            ValueError, OSError) as err:
        return error(str(err))
    for problem in report.skipped_problems:
        print(f"skipped: {problem}")
    print(f"{len(report.computed)} chunks prepared, {len(report.reused)} already done", end="")
    if report.index is None:
        print(f"; {len(report.pending)} chunks of other ranks missing: the index is written by the run that "
              f"finds every chunk done (run this command again without --rank once the others ended)")
        return 0
    s = report.index.summary
    print(f"; {out / 'index.json'} written: {s['hours']:.3f} hours, {s['conversations']} conversations, "
          f"{s['mono']} single-stream files, {s['text_files']} text files ({s['text_tokens']} tokens)")
    return 0
