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
import time
from pathlib import Path

from .common import add_threads_argument, apply_threads, error, positive_int

PRESET_NAMES = ("tiny", "nano", "mimi")  # codec_config.CODEC_TRAIN_PRESETS, named here without importing torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                        help=f"a preset ({', '.join(PRESET_NAMES)}) or a YAML file over one")
    parser.add_argument("--init", default=None, metavar="FILE.safetensors",
                        help="start from these Mimi weights (Kyutai's or an export of ours; same architecture)")
    parser.add_argument("--data", default=None, metavar="FOLDER|MANIFEST",
                        help="training audio: a folder of audio files or a JSONL manifest")
    parser.add_argument("--out", default=None, metavar="RUN",
                        help="run folder (default: runs/codec-CONFIG-DATE); must be new unless --resume")
    parser.add_argument("--steps", type=positive_int, default=None, metavar="N", help="training steps")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set loss.adversarial=0 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_argument(parser)


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
    from ..train.config import ConfigError, resolve_config
    from ..train.run import CONFIG_NAME, RunFolderError

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.resume:
        if args.out is None:
            return error("--resume needs --out RUN (the run to continue)")
        given = [f for f, v in (("CONFIG", args.config), ("--init", args.init), ("--data", args.data)) if v]
        if given:
            return error(f"--resume continues {args.out} with its own config.yaml: do not give "
                         f"{', '.join(given)} (use --set to change a value)")
        source = str(Path(args.out) / CONFIG_NAME)
        if not Path(source).is_file():
            return error(f"cannot resume: {source} not found (is {args.out} a run folder?)")
    else:
        if args.config is None:
            return error(f"give a CONFIG: a preset ({', '.join(CODEC_TRAIN_PRESETS)}) or a YAML file")
        source = args.config
    if args.out is None:
        if distributed:
            return error("under torchrun, give --out RUN (the same on every process)")
        name = Path(args.config).stem if args.config not in CODEC_TRAIN_PRESETS else args.config
        args.out = str(Path("runs") / f"codec-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        cfg = resolve_config(CodecTrainConfig, source, CODEC_TRAIN_PRESETS, _sets(args))
    except ConfigError as err:
        return error(str(err))
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
