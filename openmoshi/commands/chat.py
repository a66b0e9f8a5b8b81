"""`openmoshi chat`: talk with Moshi, over a recording (`--input user.wav --output out.wav`) or live.

File mode feeds the recording frame by frame as if it were live (the first frame's codes go to the generator
twice, see inference/session.py), then runs max_delay more frames of silence so Moshi's last frames come out,
and writes:
- `--output` a stereo wav: left = Moshi (frame t = the audio decoded at step t, silence before the first
  output), right = the user's input (frame t = the user's frame t);
- Moshi's inner monologue as timed words, `--text-json` (Kyutai's alignment sidecar layout) and `--text-srt`
  (default: beside --output with .json / .srt);
- `--save-tokens FILE.npz`: one column per generator step, `user_codes` [n_q - dep_q, T] (what the step was
  given), `text` [T] and `audio` [dep_q, T] (what it returned, -2 where nothing).

Without --input: microphone and speaker through `sounddevice`, the text printed as it comes; Ctrl-C ends.

Every flag, the input recording and every output path (suffix, folder, no output equal to another or to an input:
io_safety.check_outputs) are checked before the model loads; outputs are written atomically. This module imports
torch only in `main`, so `openmoshi chat --help` is instant.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..inference.models import add_model_arguments
from . import common
from .common import error

if TYPE_CHECKING:
    from ..inference.sampling import SamplingConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    common.add_threads_argument(parser)
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", "-i", default=None, metavar="WAV",
                    help="the user's side as a recording (any rate, any channels); without it: the microphone")
    io.add_argument("--output", "-o", default=None, metavar="WAV",
                    help="stereo wav: left Moshi, right the user (required with --input)")
    io.add_argument("--text-json", default=None, metavar="FILE", help="Moshi's words with times, JSON")
    io.add_argument("--text-srt", default=None, metavar="FILE", help="Moshi's words as subtitles, SRT")
    io.add_argument("--save-tokens", default=None, metavar="FILE.npz",
                    help="the generator's inputs and outputs, one column per step")
    io.add_argument("--no-progress", action="store_true", help="no progress bar")
    io.add_argument("--duration", type=common.positive_float, default=None, metavar="SECONDS",
                    help="microphone mode: stop after this long (default: until Ctrl-C)")
    io.add_argument("--compile", action="store_true",
                    help="run the step through torch.compile (same results, faster on CPU; compiles at start: "
                         "minutes the first time, then cached on disk; see docs/runtime.md)")
    add_sampling_arguments(parser)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """--seed, --greedy, --temp, --temp-text, --top-k, --top-k-text (shared with `openmoshi serve`)."""
    s = parser.add_argument_group("sampling (defaults: the model's lm_gen_config, else Kyutai's)")
    s.add_argument("--seed", type=common.seed, default=None, help="seed of the sampling, 0..2**64-1 (default: random)")
    s.add_argument("--greedy", action="store_true", help="argmax everywhere (deterministic)")
    s.add_argument("--temp", "--audio-temperature", dest="temp", type=common.non_negative_float, default=None,
                   help="audio temperature (0.8)")
    s.add_argument("--temp-text", "--text-temperature", dest="temp_text", type=common.non_negative_float,
                   default=None, help="text temperature (0.7)")
    s.add_argument("--top-k", "--audio-top-k", dest="top_k", type=common.non_negative_int, default=None,
                   help="audio top-k (250)")
    s.add_argument("--top-k-text", "--text-top-k", dest="top_k_text", type=common.non_negative_int, default=None,
                   help="text top-k (25)")


def announce_compile(compile: bool, batch: int) -> None:
    if compile:
        print(f"compiling the step for batch {batch} (torch.compile: minutes the first time, then cached on "
              "disk)...", file=sys.stderr, flush=True)


def announce_compiled(session) -> None:
    if session.compile_seconds is not None:
        print(f"compiling the step for batch {session.batch_size}... done in {session.compile_seconds:.1f} s",
              file=sys.stderr)


def sampling_configs(args: argparse.Namespace, gen_config: dict | None = None) -> tuple[SamplingConfig, SamplingConfig]:
    """(text, audio) sampling from the flags, then the model's `lm_gen_config`, then Kyutai's defaults."""
    from ..inference.sampling import SamplingConfig

    gen = gen_config or {}
    text_default, audio_default = SamplingConfig.text_default(), SamplingConfig.audio_default()

    def pick(flag: str, key: str, default: float) -> float:
        value = getattr(args, flag)
        return value if value is not None else gen.get(key, default)

    text = SamplingConfig(temperature=float(pick("temp_text", "temp_text", text_default.temperature)),
                          top_k=int(pick("top_k_text", "top_k_text", text_default.top_k)), greedy=args.greedy)
    audio = SamplingConfig(temperature=float(pick("temp", "temp", audio_default.temperature)),
                           top_k=int(pick("top_k", "top_k", audio_default.top_k)), greedy=args.greedy)
    return text, audio


def check_args(args: argparse.Namespace) -> str | None:
    """A message for contradictory flags, or None. (Each value's own range is checked by its argparse type.)"""
    if args.input is not None and args.output is None:
        return "--input needs --output (the stereo wav to write)"
    if args.device is not None and (why := _device_problem(args.device)):
        return why
    return None


def _device_problem(name: str) -> str | None:
    try:
        common.device(name)
    except argparse.ArgumentTypeError as err:
        return f"--device: {err}"
    return None


def output_paths(args: argparse.Namespace) -> dict[str, Path | None]:
    """What the conversation will write: the stereo wav, the words (JSON, SRT; by default beside the wav), the
    tokens."""
    out = Path(args.output) if args.output is not None else None
    json_path = args.text_json or (out.with_suffix(".json") if out is not None else None)
    srt_path = args.text_srt or (out.with_suffix(".srt") if out is not None else None)
    return {"--output": out, "--text-json": None if json_path is None else Path(json_path),
            "--text-srt": None if srt_path is None else Path(srt_path),
            "--save-tokens": None if args.save_tokens is None else Path(args.save_tokens)}


OUTPUT_SUFFIXES = {"--output": (".wav",), "--text-json": (".json",), "--text-srt": (".srt",),
                   "--save-tokens": (".npz",)}


def check_paths(args: argparse.Namespace) -> dict[str, Path | None]:
    """The output paths, checked against each other and every input (io_safety.check_outputs)."""
    from ..io_safety import check_outputs

    outputs = output_paths(args)
    inputs = [("--input", args.input), ("--moshi-weight", args.moshi_weight), ("--mimi-weight", args.mimi_weight),
              ("--tokenizer", args.tokenizer), ("--config", args.config)]
    check_outputs([(flag, path, OUTPUT_SUFFIXES[flag]) for flag, path in outputs.items()], inputs)
    return outputs


def main(args: argparse.Namespace) -> int:
    problem = check_args(args)
    if problem:
        return error(problem, 2)
    from ..audio import SAMPLE_RATE, AudioError, read_audio, resample
    from ..io_safety import OutputError

    try:
        paths = check_paths(args)
        user = read_audio(args.input, SAMPLE_RATE) if args.input is not None else None
    except (AudioError, OutputError) as err:
        return error(str(err))
    if args.input is None:
        from . import chat_live

        if (why := chat_live.unavailable()) is not None:
            return error(why, 2)
    import torch

    from ..inference.models import ModelFilesError, models_from_args

    common.apply_threads(args.threads)
    try:
        models = models_from_args(args)
    except (ModelFilesError, ValueError) as err:
        return error(str(err))
    if user is not None and models.mimi.sample_rate != SAMPLE_RATE:
        user = resample(user, SAMPLE_RATE, models.mimi.sample_rate)
    text_cfg, audio_cfg = sampling_configs(args, models.files.repo_config.lm_gen_config)
    seed = args.seed if args.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
    if not (text_cfg.is_greedy and audio_cfg.is_greedy):
        print(f"sampling seed {seed} (--seed {seed} reproduces this conversation)", file=sys.stderr)
    if user is None:
        from . import chat_live

        rec = chat_live.run_live(models, text_cfg, audio_cfg, seed, args.duration,
                                 Recorder(models.mimi.frame_size, models.mimi.sample_rate), compile=args.compile)
    else:
        rec = run_file(models, user, text_cfg, audio_cfg, seed, progress=not args.no_progress,
                       compile=args.compile)
    try:
        rec.write(paths, models)
    except OSError as err:
        return error(f"cannot write the conversation: {err}")
    return 0


class Recorder:
    """Everything a conversation produced, gathered one step at a time on the host, and its writers."""

    def __init__(self, frame_size: int, sample_rate: int) -> None:
        self.frame_size, self.sample_rate = frame_size, sample_rate
        self.user_codes: list[np.ndarray] = []  # per generator step [n_user]
        self.text: list[int] = []  # per generator step
        self.audio: list[np.ndarray] = []  # per generator step [dep_q]
        self.moshi_pcm: list[np.ndarray] = []  # per session step [frame_size]
        self.user_pcm: list[np.ndarray] = []  # per session step [frame_size]
        self.frame_text: list[int] = []  # per session step: the text token output with that frame

    def add_generator_step(self, user_codes, text, audio) -> None:
        self.user_codes.append(np.asarray(user_codes, dtype=np.int64))
        self.text.append(int(text))
        self.audio.append(np.asarray(audio, dtype=np.int64))

    def add_frame(self, out, user_frame: np.ndarray | None) -> None:
        """Row 0 of a session's `FrameOutput`, with the user's raw frame (None: silence)."""
        if out.prime is not None:
            self.add_generator_step(out.user_codes[0].cpu(), out.prime.text[0].cpu(), out.prime.audio[0].cpu())
        text = out.text[0].cpu()
        self.add_generator_step(out.user_codes[0].cpu(), text, out.audio[0].cpu())
        self.frame_text.append(int(text))
        self.moshi_pcm.append(out.pcm[0, 0].cpu().numpy())
        silence = np.zeros(self.frame_size, dtype=np.float32)
        self.user_pcm.append(silence if user_frame is None else np.asarray(user_frame, dtype=np.float32))

    def stereo(self) -> np.ndarray:
        """[T, 2] float32: left Moshi, right the user."""
        empty = np.zeros(0, dtype=np.float32)
        left = np.concatenate(self.moshi_pcm) if self.moshi_pcm else empty
        right = np.concatenate(self.user_pcm) if self.user_pcm else empty
        return np.stack([left, right], axis=1)

    def tokens(self) -> dict[str, np.ndarray]:
        n_user = self.user_codes[0].shape[0] if self.user_codes else 0
        dep_q = self.audio[0].shape[0] if self.audio else 0
        return {
            "user_codes": np.stack(self.user_codes, axis=1) if self.user_codes else np.zeros((n_user, 0), np.int64),
            "text": np.asarray(self.text, dtype=np.int64),
            "audio": np.stack(self.audio, axis=1) if self.audio else np.zeros((dep_q, 0), np.int64),
        }

    def write(self, paths: dict[str, Path | None], models, show_words: bool = True) -> list:
        """Write the outputs of `output_paths` (None: not written), each atomically; returns Moshi's words
        (`transcript.Word`), printed on stdout too unless `show_words` is False."""
        from ..audio import write_wav
        from ..inference.transcript import words_from_tokens, write_json, write_srt
        from ..io_safety import save_npz

        words = words_from_tokens(self.frame_text, models.tokenizer, self.frame_size / self.sample_rate)
        if (out := paths["--output"]) is not None:
            write_wav(out, self.stereo(), self.sample_rate, channels_last=True)
            print(f"wrote {out} ({len(self.moshi_pcm) * self.frame_size / self.sample_rate:.2f} s, stereo: "
                  f"left Moshi, right you)", file=sys.stderr)
        if paths["--text-json"] is not None:
            write_json(paths["--text-json"], words)
        if paths["--text-srt"] is not None:
            write_srt(paths["--text-srt"], words)
        if paths["--save-tokens"] is not None:
            save_npz(paths["--save-tokens"], **self.tokens())
        if words and show_words:
            print(" ".join(w.text for w in words))
        return words


def run_file(models, user: np.ndarray, text_cfg: SamplingConfig, audio_cfg: SamplingConfig, seed: int,
             progress: bool = True, compile: bool = False) -> Recorder:
    """A conversation over a recording (mono float32 [T] at Mimi's rate), one frame at a time as if live."""
    import torch
    from tqdm import tqdm

    from ..inference.session import DuplexSession

    mimi, lm = models.mimi, models.lm
    fs = mimi.frame_size
    n_frames = max(1, math.ceil(user.shape[0] / fs))
    padded = np.zeros(n_frames * fs, dtype=np.float32)
    padded[: user.shape[0]] = user  # the last partial frame is completed with silence
    frames = padded.reshape(n_frames, fs)
    total = n_frames + lm.cfg.max_delay  # then max_delay frames of silence: Moshi's last frames come out
    rec = Recorder(fs, mimi.sample_rate)
    frame_seconds = fs / mimi.sample_rate
    announce_compile(compile, 1)
    with DuplexSession(mimi, lm, 1, text_sampling=text_cfg, audio_sampling=audio_cfg, seed=seed,
                       compile=compile) as session:
        announce_compiled(session)
        bar = tqdm(total=total, unit="frame", disable=not progress, desc="chat", file=sys.stderr)
        start = time.perf_counter()
        for t in range(total):
            user_frame = frames[t] if t < n_frames else None
            pcm = None if user_frame is None else torch.from_numpy(user_frame).view(1, 1, fs)
            out = session.step(pcm)
            rec.add_frame(out, user_frame)
            elapsed = time.perf_counter() - start
            bar.update(1)
            # real-time factor: compute time over audio time (< 1: faster than real time)
            bar.set_postfix(rtf=f"{elapsed / ((t + 1) * frame_seconds):.2f}")
    bar.close()
    return rec
