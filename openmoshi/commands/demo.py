"""`openmoshi demo`: the main job. A conversation with the bundled model over a recorded spoken question.

The bundled question (`default_model.bundled_question()`, or `--input`) is fed to Moshi one 80 ms frame at a
time as if live, followed by `--answer-seconds` of silence so Moshi can answer; the conversation loop, the
recorder and its writers are `openmoshi chat`'s (`chat.run_file`, `chat.Recorder`). It prints what the user
said (the recording's sidecar `.txt`, when there is one) and Moshi's words, writes into `--output-dir`
(default `./openmoshi-demo`) `conversation.wav` (stereo: left Moshi, right the user, as `chat` writes it),
`conversation.json` (Moshi's timed words, Kyutai's alignment layout) and `conversation.srt`, and ends with how to
talk live in the browser (`openmoshi serve`).

The model: the bundled nanomoshi unless `--model` (or a weight flag) is given, e.g. `--model
kyutai/moshiko-pytorch-bf16` for Kyutai's Moshi. Sampling uses a fixed seed by default (`--seed`), so the demo
says the same thing every time. Everything is checked before the model loads (the output folder, no output that
is an input); outputs are written atomically. torch is imported only in `main`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..inference.models import add_model_arguments
from . import common
from .chat import add_sampling_arguments
from .common import error

DEFAULT_OUTPUT_DIR = "openmoshi-demo"
OUTPUT_NAMES = {"--output": "conversation.wav", "--text-json": "conversation.json", "--text-srt": "conversation.srt"}
DEMO_SEED = 1
SERVE_URL = "http://localhost:8998"  # `openmoshi serve`'s defaults: --host 127.0.0.1 --port 8998
MAX_ANSWER_SECONDS = 600.0  # the silence is held in memory: a typo like 1e9 must not allocate terabytes


def answer_seconds(text: str) -> float:
    value = common.non_negative_float(text)
    if value > MAX_ANSWER_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_ANSWER_SECONDS:g}, got {value:g}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    common.add_threads_argument(parser)
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", "-i", default=None, metavar="WAV",
                    help="the user's side (default: the bundled question, openmoshi/assets/question.wav)")
    io.add_argument("--output-dir", "-o", default=DEFAULT_OUTPUT_DIR, metavar="DIR",
                    help="where the conversation goes: conversation.wav (left Moshi, right the user), "
                         ".json and .srt (Moshi's words); default ./%(default)s")
    io.add_argument("--answer-seconds", type=answer_seconds, default=4.0, metavar="SECONDS",
                    help="silence after the recording, for Moshi's answer (default 4)")
    io.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_sampling_arguments(parser)
    for action in parser._actions:  # chat's --seed defaults to a random one; the demo's answer is reproducible
        if action.dest == "seed":
            action.default, action.help = DEMO_SEED, f"seed of the sampling, 0..2**64-1 (default {DEMO_SEED})"


def output_paths(output_dir: str) -> dict[str, Path | None]:
    """chat.Recorder.write's paths for the demo's three files in `output_dir` (no tokens file)."""
    folder = Path(output_dir).expanduser()
    return {**{flag: folder / name for flag, name in OUTPUT_NAMES.items()}, "--save-tokens": None}


def spoken_text(recording: Path) -> str | None:
    """The words of a recording, from its sidecar NAME.txt (None without one; the first 500 characters)."""
    try:
        with open(recording.with_suffix(".txt"), encoding="utf-8", errors="replace") as f:
            text = f.read(501)
    except OSError:
        return None
    text = " ".join(text.split())
    return (text[:500] + "..." if len(text) > 500 else text) or None


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters (a model's byte pieces may be any byte) become U+FFFD."""
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


def _check(args: argparse.Namespace, source: Path) -> dict[str, Path | None]:
    """The output paths, checked (a folder, not a file; no output that is an input); OutputError otherwise."""
    from ..io_safety import OutputError, check_outputs

    folder = Path(args.output_dir).expanduser()
    if not str(args.output_dir).strip():
        raise OutputError("--output-dir: empty path")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--output-dir {args.output_dir} exists and is not a folder")
    paths = output_paths(args.output_dir)
    inputs = [("--input", source), ("--moshi-weight", args.moshi_weight), ("--mimi-weight", args.mimi_weight),
              ("--tokenizer", args.tokenizer), ("--config", args.config), ("--lora", args.lora)]
    check_outputs([(f"--output-dir's {paths[flag].name}", paths[flag], (Path(name).suffix,))
                   for flag, name in OUTPUT_NAMES.items()], inputs)
    return paths


def main(args: argparse.Namespace) -> int:
    from ..audio import SAMPLE_RATE, AudioError, read_audio, resample
    from ..default_model import bundled_model_dir, bundled_question
    from ..io_safety import OutputError

    if args.device is not None:
        try:
            common.device(args.device)
        except argparse.ArgumentTypeError as err:
            return error(f"--device: {err}", 2)
    source = Path(args.input).expanduser() if args.input is not None else bundled_question()
    try:
        paths = _check(args, source)
        user = read_audio(source, SAMPLE_RATE)
    except (AudioError, OutputError) as err:
        return error(str(err))
    import numpy as np

    from ..inference.models import ModelFilesError, models_from_args
    from . import chat

    common.apply_threads(args.threads)
    try:
        models = models_from_args(args)
    except (ModelFilesError, ValueError) as err:
        return error(str(err))
    rate = models.mimi.sample_rate
    if rate != SAMPLE_RATE:
        user = resample(user, SAMPLE_RATE, rate)
    user = np.concatenate([user, np.zeros(round(args.answer_seconds * rate), dtype=np.float32)])
    text_cfg, audio_cfg = chat.sampling_configs(args, models.files.repo_config.lm_gen_config)
    seed = DEMO_SEED if args.seed is None else args.seed  # (a Namespace built without the parser has None)
    print(f"model: {models.files.source}; you: {source}", file=sys.stderr)
    rec = chat.run_file(models, user, text_cfg, audio_cfg, seed, progress=not args.no_progress)
    try:
        words = rec.write(paths, models, show_words=False)
    except OSError as err:
        return error(f"cannot write the conversation: {err}")
    asked = spoken_text(source)
    print(f"You:   {printable(asked)}" if asked else f"You:   ({printable(source.name)})")
    said = printable(" ".join(w.text for w in words))
    print(f"Moshi: {said}" if words else "Moshi: (no words in its text stream)")
    print(f"Wrote {paths['--output']} (stereo: left Moshi, right you), {paths['--text-json']} and "
          f"{paths['--text-srt']} (Moshi's words with times).")
    print(f"Talk to it live in your browser: run `openmoshi serve`, then open {SERVE_URL}")
    if models.files.source == str(bundled_model_dir()):
        print("Kyutai's Moshi instead of the bundled model: add --model kyutai/moshiko-pytorch-bf16")
    return 0
