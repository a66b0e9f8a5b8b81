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
from pathlib import Path

from .common import apply_threads, error
from .train_common import add_run_arguments, resolve_run

PRESET_NAMES = ("tiny", "pretrain", "posttrain", "finetune", "finetune_lora", "instruct", "nano",
                "nano_post")  # lm_config, torch-free


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, PRESET_NAMES, "lm", "optim.lr=1e-4")
    parser.add_argument("--model", default=None, metavar="DIR|REPO",
                        help="start from this checkpoint in Kyutai's layout (its architecture stands); "
                             "default: a new model of the preset's architecture")
    parser.add_argument("--data", default=None, metavar="MANIFEST",
                        help="JSONL dataset manifest (prepared on first use), or 'synthetic' for a smoke test")


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
    from ..train.lm_config import LM_TRAIN_PRESETS, LMTrainConfig
    from ..train.run import RunFolderError

    resolved = resolve_run(args, kind="lm", cls=LMTrainConfig, presets=LM_TRAIN_PRESETS,
                           starts={"--model": args.model, "--data": args.data}, sets=_sets(args))
    if isinstance(resolved, str):
        return error(resolved)
    cfg, args.out = resolved
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
