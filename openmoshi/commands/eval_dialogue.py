"""`openmoshi eval dialogue --model FOLDER --data MANIFEST --out DIR`: how well a model holds a conversation.

On held-out conversations (`openmoshi data synth --split eval`), the model plays Moshi against the recorded user
(channel 1), several conversations at once as rows of one session. Judged: the share of questions answered right
from the text stream and from Moshi's audio (Whisper tiny.en, offline), how often Moshi talks over the user, the
delay from the user's last word to Moshi's first, and the real-time factor on this machine alone and with 4
conversations at once. DIR gets report.md, accuracy_per_family.png, delays.png and results.json (docs/eval.md).

`--oracle` replays the ground truth's Moshi instead of a model: the ceiling of the judges.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..inference.models import add_model_arguments
from .common import add_threads_argument, apply_threads, error, non_negative_int, positive_float, positive_int


def _batches(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .chat import add_sampling_arguments

    io = parser.add_argument_group("data and report")
    io.add_argument("--data", required=True, metavar="MANIFEST",
                    help="manifest.jsonl of held-out conversations (`openmoshi data synth --split eval`)")
    io.add_argument("--out", "-o", required=True, metavar="DIR", help="report folder (created)")
    io.add_argument("--limit", type=positive_int, default=None, metavar="N", help="only the first N conversations")
    io.add_argument("--oracle", action="store_true",
                    help="replay the ground truth's Moshi instead of a model (the judges' ceiling)")
    io.add_argument("--no-audio-judge", action="store_true",
                    help="judge the text stream only (no speech recogniser, no audio kept)")
    io.add_argument("--batch-size", type=positive_int, default=4, metavar="B",
                    help="conversations run at once, as rows of one session (default 4; the result does not "
                         "depend on it)")
    io.add_argument("--rtf-frames", type=non_negative_int, default=125, metavar="N",
                    help="frames timed for the real-time factor (default 125 = 10 s; 0: not measured)")
    io.add_argument("--rtf-batches", type=_batches, default=[1, 4], metavar="B[,B...]",
                    help="conversations at once for the real-time factor (default 1,4)")
    io.add_argument("--window", type=positive_float, default=8.0, metavar="SECONDS",
                    help="longest reply window after a question (default 8)")
    io.add_argument("--no-progress", action="store_true", help="no progress bar")
    io.add_argument("--compile", action="store_true",
                    help="run the step through torch.compile (same results, faster on CPU; compiles once per batch "
                         "size: minutes the first time, then cached on disk)")
    add_model_arguments(parser)
    add_threads_argument(parser)
    add_sampling_arguments(parser)
    parser.set_defaults(seed=0)  # an evaluation is reproducible unless asked otherwise


def check_paths(args: argparse.Namespace) -> Path:
    """The report folder, checked against the inputs before any work. ValueError/OutputError."""
    from ..eval.dialogue_report import OUTPUT_NAMES
    from ..io_safety import check_outputs

    data, out = Path(args.data).expanduser(), Path(args.out).expanduser()
    if not data.is_file():
        raise ValueError(f"--data {args.data}: " + ("is a folder; give its manifest.jsonl" if data.is_dir()
                                                     else "manifest not found"))
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    folder = data.resolve().parent
    if out.resolve() == folder or out.resolve().is_relative_to(folder):
        raise ValueError(f"--out {args.out} is inside the data folder {folder}: choose a folder outside it (the "
                         "report must not mix with the conversations)")
    inputs = [("--data", args.data)] + [(f"--{k.replace('_', '-')}", getattr(args, k, None))
                                        for k in ("moshi_weight", "mimi_weight", "tokenizer", "config", "lora")]
    check_outputs([("the report file", out / name, (Path(name).suffix,)) for name in OUTPUT_NAMES], inputs)
    if not out.exists():  # can the folder be made? (check_outputs cannot tell for /proc and such); leave nothing
        try:
            out.mkdir(parents=True)
            out.rmdir()
        except OSError as err:
            raise ValueError(f"--out {args.out}: cannot create the folder ({err.strerror})") from None
    return out


def main(args: argparse.Namespace) -> int:
    from ..audio import AudioError
    from ..eval.dialogue_data import DialogueDataError, load_conversations

    if args.oracle and any(getattr(args, k) for k in ("model", "moshi_weight", "mimi_weight", "tokenizer",
                                                       "config", "lora")):
        return error("--oracle replays the ground truth: give no model flags with it", 2)
    try:
        out = check_paths(args)
        conversations = load_conversations(args.data, args.limit)
    except (OSError, ValueError) as err:  # OutputError, DialogueDataError
        return error(str(err))
    threads = apply_threads(args.threads)
    asr = None
    if not args.no_audio_judge:
        try:
            from ..eval.asr import WhisperASR

            asr = WhisperASR(threads=threads)
        except RuntimeError as err:
            return error(str(err).replace("--no-wer", "--no-audio-judge"))
    try:
        runner, models = _runner(args, asr is not None)
    except (OSError, ValueError, RuntimeError) as err:  # ModelFilesError, CheckpointError, TokenizerError
        return error(str(err))
    from ..eval.dialogue_eval import evaluate
    from ..eval.dialogue_judge import JudgeConfig
    from ..eval.dialogue_report import write_report

    try:
        results = evaluate(conversations, runner, asr, JudgeConfig(window_s=args.window),
                           progress=not args.no_progress)
        if models is not None and args.rtf_frames > 0:
            results.rtf = _measure(args, models, conversations, threads)
    except (AudioError, DialogueDataError) as err:
        return error(str(err))
    except KeyboardInterrupt:
        return error("interrupted: no report written", 130)
    results.settings = {"seed": args.seed, "batch size": args.batch_size, "threads": threads,
                        "audio judge": asr is not None, "limit": args.limit, "data": str(args.data)}
    try:
        write_report(results, out)
    except OSError as err:
        return error(f"cannot write the report: {err}")
    _print_summary(results.summary(), out)
    return 0


def _runner(args: argparse.Namespace, keep_audio: bool):
    from ..eval.dialogue_run import ModelRunner, OracleRunner

    if args.oracle:
        return OracleRunner(keep_audio=keep_audio), None
    from ..inference.models import models_from_args
    from .chat import sampling_configs

    models = models_from_args(args)
    text_cfg, audio_cfg = sampling_configs(args, models.files.repo_config.lm_gen_config)
    if args.compile:
        print("--compile: the step is compiled as each session starts (once per batch size; minutes the first "
              "time, then cached on disk)", file=sys.stderr)
    return ModelRunner(models, args.batch_size, text_cfg, audio_cfg, args.seed, keep_audio,
                       compile=args.compile), models


def _measure(args: argparse.Namespace, models, conversations, threads: int):
    from ..eval.dialogue_run import measure_rtf
    from .chat import sampling_configs

    text_cfg, audio_cfg = sampling_configs(args, models.files.repo_config.lm_gen_config)
    users = [c.read_channels(models.mimi.sample_rate)[1] for c in conversations[: max(args.rtf_batches)]]
    results = []
    for batch in args.rtf_batches:
        if not args.no_progress:
            print(f"timing {args.rtf_frames} frames with {batch} conversation(s) at once...", file=sys.stderr)
        results.append(measure_rtf(models, users, batch, args.rtf_frames, text_cfg, audio_cfg, args.seed,
                                   threads=threads, compile=args.compile))
    return results


def _print_summary(s: dict, out: Path) -> None:
    for stream, acc in s["accuracy"].items():
        if acc["accuracy"] is not None:
            print(f"answered right ({stream}): {100 * acc['accuracy']:.1f}% ({acc['right']}/{acc['total']})")
    for stream, over in s["talk_over"].items():
        if over["share"] is not None:
            print(f"talk-over ({stream}): {100 * over['share']:.1f}% of {over['turns']} user lines")
    d = s["delay_s"]["text"]
    if d["median"] is not None:
        print(f"response delay (text): median {d['median']:.2f} s, p90 {d['p90']:.2f} s "
              f"(ground truth median {s['delay_s']['ground_truth']['median']:.2f} s)")
    for r in s["real_time"]:
        print(f"real-time factor with {r['batch']} at once: {r['rtf']:.3f} "
              f"({100 * r['share_within_frame']:.0f}% of frames within 80 ms)")
    print(f"report: {out / 'report.md'}")
