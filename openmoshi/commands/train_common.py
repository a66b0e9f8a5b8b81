"""What `openmoshi train lm` and `openmoshi train codec` share: the run flags and how CONFIG, `--resume` and
`--out` resolve to a config and a run folder. Torch-free (the presets' registries are imported in `main`)."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .common import add_threads_argument, positive_int


def add_run_arguments(parser: argparse.ArgumentParser, preset_names: Sequence[str], kind: str,
                      set_example: str) -> None:
    """CONFIG (positional), --out, --steps, --set, --resume, --no-progress, --threads."""
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                        help=f"a preset ({', '.join(preset_names)}) or a YAML file over one")
    parser.add_argument("--out", default=None, metavar="RUN",
                        help=f"run folder (default: runs/{kind}-CONFIG-DATE); must be new unless --resume")
    parser.add_argument("--steps", type=positive_int, default=None, metavar="N", help="training steps")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value, e.g. --set {set_example} (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_argument(parser)


def is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_run(args: argparse.Namespace, *, kind: str, cls: type, presets: dict[str, Callable[[], Any]],
                starts: dict[str, Any], sets: list[str]) -> tuple[Any, str] | str:
    """(config, run folder), or the message of a refusal.

    `starts`: the flags that choose where a run starts ({"--model": value, ...}); with --resume, RUN/config.yaml
    stands and none of them (nor CONFIG) may be given. Without --out, the run folder is runs/KIND-CONFIG-DATE
    (not under torchrun, where every process must name the same folder).
    """
    from ..train.config import ConfigError, resolve_config
    from ..train.run import CONFIG_NAME

    out = args.out
    if args.resume:
        if out is None:
            return "--resume needs --out RUN (the run to continue)"
        given = [flag for flag, value in {"CONFIG": args.config, **starts}.items() if value]
        if given:
            return (f"--resume continues {out} with its own config.yaml: do not give {', '.join(given)} "
                    "(use --set to change a value)")
        source = str(Path(out) / CONFIG_NAME)
        if not Path(source).is_file():
            return f"cannot resume: {source} not found (is {out} a run folder?)"
    else:
        if args.config is None:
            return f"give a CONFIG: a preset ({', '.join(presets)}) or a YAML file"
        source = args.config
    if out is None:
        if is_distributed():
            return "under torchrun, give --out RUN (the same on every process)"
        name = args.config if args.config in presets else Path(args.config).stem
        out = str(Path("runs") / f"{kind}-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        return resolve_config(cls, source, presets, sets), out
    except ConfigError as err:
        return str(err)
