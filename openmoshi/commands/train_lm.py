"""`openmoshi train lm`: train or fine-tune the language model (see docs/training.md).

  openmoshi train lm CONFIG [--model DIR|REPO] [--data MANIFEST|synthetic] [--out RUN] [--steps N]
                     [--set key=value ...] [--resume]

CONFIG is a preset name (`openmoshi.train.lm_config.LM_TRAIN_PRESETS`) or a YAML file over one. `--model`,
`--data` and `--steps` are shorthands for `--set model.init=...`, `data.manifest=...`, `train.steps=...`.
`--resume` continues the run in RUN from its newest checkpoint, with RUN/config.yaml as the config (CONFIG,
--model and --data must then not be given; --steps and --set may change it, e.g. to train longer). Launch
under torchrun for several processes (each runs this command; --out is then required).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from .common import add_threads_argument, apply_threads, error, positive_int

PRESET_NAMES = ("tiny", "pretrain", "posttrain", "finetune", "finetune_lora", "instruct", "nano",
                "nano_post")  # lm_config, torch-free


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                        help=f"a preset ({', '.join(PRESET_NAMES)}) or a YAML file over one")
    parser.add_argument("--model", default=None, metavar="DIR|REPO",
                        help="start from this checkpoint in Kyutai's layout (its architecture stands); "
                             "default: a new model of the preset's architecture")
    parser.add_argument("--data", default=None, metavar="MANIFEST",
                        help="JSONL dataset manifest (prepared on first use), or 'synthetic' for a smoke test")
    parser.add_argument("--out", default=None, metavar="RUN",
                        help="run folder (default: runs/lm-CONFIG-DATE); must be new unless --resume")
    parser.add_argument("--steps", type=positive_int, default=None, metavar="N", help="training steps")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_argument(parser)


def _sets(args: argparse.Namespace) -> list[str]:
    sets = []
    if args.model is not None:
        sets.append(f"model.init={args.model}")
    if args.data is not None:
        sets.append("data.synthetic=true" if args.data == "synthetic" else f"data.manifest={args.data}")
    sets += list(args.sets)
    if args.steps is not None:
        sets.append(f"train.steps={args.steps}")
    return sets


def _check_paths(cfg) -> str | None:
    value = cfg.data.manifest
    if value is not None and not cfg.data.synthetic and not Path(value).expanduser().is_file():
        return f"--data {value}: no such manifest file"
    return None


def main(args: argparse.Namespace) -> int:
    from ..train.config import ConfigError, resolve_config
    from ..train.lm_config import LM_TRAIN_PRESETS, LMTrainConfig
    from ..train.run import CONFIG_NAME, RunFolderError

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.resume:
        if args.out is None:
            return error("--resume needs --out RUN (the run to continue)")
        given = [f for f, v in (("CONFIG", args.config), ("--model", args.model), ("--data", args.data)) if v]
        if given:
            return error(f"--resume continues {args.out} with its own config.yaml: do not give "
                         f"{', '.join(given)} (use --set to change a value)")
        source = str(Path(args.out) / CONFIG_NAME)
        if not Path(source).is_file():
            return error(f"cannot resume: {source} not found (is {args.out} a run folder?)")
    else:
        if args.config is None:
            return error(f"give a CONFIG: a preset ({', '.join(LM_TRAIN_PRESETS)}) or a YAML file")
        source = args.config
    if args.out is None:
        if distributed:
            return error("under torchrun, give --out RUN (the same on every process)")
        name = Path(args.config).stem if args.config not in LM_TRAIN_PRESETS else args.config
        args.out = str(Path("runs") / f"lm-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        cfg = resolve_config(LMTrainConfig, source, LM_TRAIN_PRESETS, _sets(args))
    except ConfigError as err:
        return error(str(err))
    problem = _check_paths(cfg)
    if problem:
        return error(problem)
    apply_threads(args.threads)
    from ..checkpoint import CheckpointError
    from ..model_files import ModelFilesError
    from ..train.distributed import shutdown
    from ..train.lm_trainer import train_lm

    try:
        result = train_lm(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    except (RunFolderError, ModelFilesError, CheckpointError, ValueError) as err:
        return error(str(err))
    finally:
        shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.last
        loss = f", loss {last['loss']:.4f}" if last.get("loss") is not None else ""
        print(f"done: step {result.step}{loss}; run folder {result.run}"
              + (f"; model in {result.export}" if result.export else ""))
    return 0
