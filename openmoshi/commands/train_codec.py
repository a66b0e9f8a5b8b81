"""`openmoshi train codec`: train a Mimi codec, from scratch or from weights (see docs/codec_training.md).

  openmoshi train codec CONFIG [--init FILE.safetensors] [--data FOLDER|MANIFEST] [--out RUN] [--steps N]
                        [--set key=value ...] [--resume]

CONFIG is a preset (`tiny`, `mimi`: openmoshi.train.codec_config.CODEC_TRAIN_PRESETS) or a YAML file over one.
`--init`, `--data` and `--steps` are shorthands for `--set model.init=...`, `data.source=...`,
`train.steps=...`. `--resume` continues the run in RUN from its newest checkpoint with RUN/config.yaml (CONFIG,
--init and --data must then not be given). Launch under torchrun for several processes (--out required).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .common import apply_threads, error
from .train_common import add_run_arguments, resolve_run

PRESET_NAMES = ("tiny", "nano", "mimi")  # codec_config.CODEC_TRAIN_PRESETS, named here without importing torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, PRESET_NAMES, "codec", "loss.reconstruction.adversarial=0")
    parser.add_argument("--init", default=None, metavar="FILE.safetensors",
                        help="start from these Mimi weights (Kyutai's or an export of ours; same architecture)")
    parser.add_argument("--data", default=None, metavar="FOLDER|MANIFEST",
                        help="training audio: a folder of audio files or a JSONL manifest")


def _sets(args: argparse.Namespace) -> list[str]:
    sets = []
    if args.init is not None:
        sets.append(f"model.init={args.init}")
    if args.data is not None:
        sets.append(f"data.source={args.data}")
    sets += list(args.sets)
    if args.steps is not None:
        sets.append(f"train.steps={args.steps}")
    return sets


def main(args: argparse.Namespace) -> int:
    from ..train.codec_config import CODEC_TRAIN_PRESETS, CodecTrainConfig
    from ..train.run import RunFolderError

    resolved = resolve_run(args, kind="codec", cls=CodecTrainConfig, presets=CODEC_TRAIN_PRESETS,
                           starts={"--init": args.init, "--data": args.data}, sets=_sets(args))
    if isinstance(resolved, str):
        return error(resolved)
    cfg, args.out = resolved
    if cfg.data.source is None:
        return error("no training audio: pass --data FOLDER|MANIFEST")
    for label, value in (("--data", cfg.data.source), ("data.held_out", cfg.data.held_out)):
        if value is not None and not Path(value).expanduser().exists():
            return error(f"{label} {value}: not found")
    if cfg.model.init is not None and not Path(cfg.model.init).expanduser().is_file():
        return error(f"--init {cfg.model.init}: no such weights file")
    apply_threads(args.threads)
    from ..checkpoint import CheckpointError
    from ..train.codec_trainer import train_codec
    from ..train.distributed import shutdown

    try:
        result = train_codec(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    except (RunFolderError, CheckpointError, ValueError, RuntimeError) as err:
        return error(str(err))
    finally:
        shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        loss = result.last.get("loss")
        print(f"done: step {result.step}" + (f", mel loss {loss:.4f}" if loss is not None else "")
              + f"; run folder {result.run}" + (f"; codec in {result.export.parent}" if result.export else ""))
    return 0
