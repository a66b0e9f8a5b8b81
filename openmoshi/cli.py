"""The `openmoshi` command line: `openmoshi <command> ...`.

Each command lives in its own module exposing `add_arguments(parser)` and `main(args) -> int`; this file only
dispatches, and imports a command's module only when that command runs; a command module imports torch only in
its `main`, so every `--help` is instant. Usage errors print `error: ...` (exit status 2), like every other
refusal of the commands (exit status 1). Before a command runs, the OpenMP wait policy is set for busy machines
(commands/common.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

# name -> (module, one-line help). Modules are imported lazily so `openmoshi --help` is instant.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("openmoshi.commands.demo", "the main job: a conversation with the bundled model over a spoken question"),
    "codec": ("openmoshi.commands.codec", "encode audio to Mimi codes, decode codes to audio, a round-trip demo"),
    "helium": ("openmoshi.commands.helium", "run a checkpoint's temporal transformer as a text model"),
    "chat": ("openmoshi.commands.chat", "talk with Moshi, from a recording or a microphone"),
    "serve": ("openmoshi.commands.serve", "serve Moshi to browsers and clients (websocket /api/chat, web page)"),
    "client": ("openmoshi.commands.client", "talk to an openmoshi (or Kyutai) server: microphone or wav files"),
}

# Groups of commands: `openmoshi data check ...`. name -> (one-line help, {sub: (module, one-line help)}).
GROUPS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "data": ("datasets: check, prepare, synthesise, cut into clips", {
        "check": ("openmoshi.commands.data_check", "validate a dataset manifest and list every problem"),
        "prepare": ("openmoshi.commands.data_prepare", "compute Mimi codes and the text stream into shards"),
        "synth": ("openmoshi.commands.data_synth", "generate spoken two-party conversations offline"),
        "clips": ("openmoshi.commands.data_clips", "cut conversations into short mono clips with their words"),
    }),
    "train": ("training: the language model, the codec", {
        "lm": ("openmoshi.commands.train_lm", "train or fine-tune (full or LoRA) the language model"),
        "codec": ("openmoshi.commands.train_codec", "train a Mimi codec"),
    }),
    "eval": ("evaluation reports", {
        "codec": ("openmoshi.commands.eval_codec", "evaluate a codec: bitrate, mel distance, SI-SDR, PESQ, STOI, WER"),
        "dialogue": ("openmoshi.commands.eval_dialogue",
                     "evaluate a model in conversation: questions answered, talk-over, delay, real time"),
    }),
}


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors printed as `error: ...` (and where to find the usage), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def main(argv: list[str] | None = None) -> int:
    from .commands.common import configure_threading_env

    argv = sys.argv[1:] if argv is None else argv
    parser = Parser(prog="openmoshi", description="openmoshi: Moshi, from scratch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = argv[0] if argv else None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if name == chosen:
            importlib.import_module(module_name).add_arguments(p)
    for name, (help_text, subcommands) in GROUPS.items():
        g = sub.add_parser(name, help=help_text, description=help_text)
        gsub = g.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        g.set_defaults(_group=g)
        for sub_name, (module_name, sub_help) in subcommands.items():
            p = gsub.add_parser(sub_name, help=sub_help, description=sub_help)
            p.set_defaults(_module=module_name)
            if name == chosen and len(argv) > 1 and argv[1] == sub_name:
                importlib.import_module(module_name).add_arguments(p)
    args = parser.parse_args(argv)
    if args.command in GROUPS and getattr(args, "subcommand", None) is None:
        args._group.print_help()
        return 2
    if args.command is None:
        parser.print_help()
        return 2
    configure_threading_env()  # before the command imports torch
    module = importlib.import_module(args._module)
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
