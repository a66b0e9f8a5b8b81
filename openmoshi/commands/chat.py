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
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from ..inference.models import ModelFilesError, add_model_arguments, models_from_args
from ..inference.sampling import SamplingConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
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
    io.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                    help="microphone mode: stop after this long (default: until Ctrl-C)")
    s = parser.add_argument_group("sampling (defaults: the model's lm_gen_config, else Kyutai's)")
    s.add_argument("--seed", type=int, default=None, help="seed of the sampling (default: random)")
    s.add_argument("--greedy", action="store_true", help="argmax everywhere (deterministic)")
    s.add_argument("--temp", "--audio-temperature", dest="temp", type=float, default=None,
                   help="audio temperature (0.8)")
    s.add_argument("--temp-text", "--text-temperature", dest="temp_text", type=float, default=None,
                   help="text temperature (0.7)")
    s.add_argument("--top-k", "--audio-top-k", dest="top_k", type=int, default=None, help="audio top-k (250)")
    s.add_argument("--top-k-text", "--text-top-k", dest="top_k_text", type=int, default=None,
                   help="text top-k (25)")


def sampling_configs(args: argparse.Namespace, gen_config: dict | None = None) -> tuple[SamplingConfig, SamplingConfig]:
    """(text, audio) sampling from the flags, then the model's `lm_gen_config`, then Kyutai's defaults."""
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
    """A message for contradictory flags, or None."""
    if args.input is not None and args.output is None:
        return "--input needs --output (the stereo wav to write)"
    for name in ("temp", "temp_text"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            return f"--{name.replace('_', '-')} must be >= 0"
    for name in ("top_k", "top_k_text"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            return f"--{name.replace('_', '-')} must be >= 0"
    if args.duration is not None and args.duration <= 0:
        return "--duration must be > 0"
    return None


def main(args: argparse.Namespace) -> int:
    problem = check_args(args)
    if problem:
        print(f"openmoshi chat: {problem}", file=sys.stderr)
        return 2
    if args.input is None:
        from . import chat_live

        if (why := chat_live.unavailable()) is not None:
            print(f"openmoshi chat: {why}", file=sys.stderr)
            return 2
    import torch

    from ..audio import AudioError, read_audio

    try:
        models = models_from_args(args)
        user = read_audio(args.input, models.mimi.sample_rate) if args.input is not None else None
    except (ModelFilesError, AudioError, ValueError) as err:
        print(f"openmoshi chat: {err}", file=sys.stderr)
        return 1
    text_cfg, audio_cfg = sampling_configs(args, models.files.repo_config.lm_gen_config)
    seed = args.seed if args.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
    if not (text_cfg.is_greedy and audio_cfg.is_greedy):
        print(f"sampling seed {seed} (--seed {seed} reproduces this conversation)", file=sys.stderr)
    if user is None:
        from . import chat_live

        rec = chat_live.run_live(models, text_cfg, audio_cfg, seed, args.duration,
                                 Recorder(models.mimi.frame_size, models.mimi.sample_rate))
    else:
        rec = run_file(models, user, text_cfg, audio_cfg, seed, progress=not args.no_progress)
    rec.write(args, models)
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

    def write(self, args: argparse.Namespace, models) -> None:
        import soundfile as sf

        from ..inference.transcript import words_from_tokens, write_json, write_srt

        words = words_from_tokens(self.frame_text, models.tokenizer, self.frame_size / self.sample_rate)
        json_path, srt_path = args.text_json, args.text_srt
        if args.output is not None:
            out = Path(args.output)
            out.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(out), np.clip(self.stereo(), -1.0, 1.0), self.sample_rate, subtype="PCM_16", format="WAV")
            json_path = json_path or out.with_suffix(".json")
            srt_path = srt_path or out.with_suffix(".srt")
            print(f"wrote {out} ({len(self.moshi_pcm) * self.frame_size / self.sample_rate:.2f} s, stereo: "
                  f"left Moshi, right you)", file=sys.stderr)
        if json_path:
            write_json(json_path, words)
        if srt_path:
            write_srt(srt_path, words)
        if args.save_tokens:
            np.savez(args.save_tokens, **self.tokens())
        if words:
            print(" ".join(w.text for w in words))


def run_file(models, user: np.ndarray, text_cfg: SamplingConfig, audio_cfg: SamplingConfig, seed: int,
             progress: bool = True) -> Recorder:
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
    bar = tqdm(total=total, unit="frame", disable=not progress, desc="chat", file=sys.stderr)
    start = time.perf_counter()
    with DuplexSession(mimi, lm, 1, text_sampling=text_cfg, audio_sampling=audio_cfg, seed=seed) as session:
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
