"""Running Moshi over held-out conversations for `openmoshi eval dialogue`, and timing it.

A runner turns conversations into `RunOutput`s: Moshi's timed words (its text stream) and its audio. Two kinds:
- `ModelRunner`: the model as Moshi. The user's channel (channel 1 of the stereo wav) is fed frame by frame
  (80 ms, 1920 samples at 24 kHz) into one `DuplexSession` whose rows are several conversations at once; a row
  that finishes (its frames, then max_delay frames of silence so Moshi's last frames come out) takes the next
  conversation (`join`), or leaves. Each conversation is seeded with `seed + its manifest index`, and a row's
  tokens do not depend on the other rows, so the result does not depend on the batch size. A text token output
  with frame t is stamped t * 80 ms (`transcript.words_from_tokens`), on the same clock as the user's words.
- `OracleRunner`: replays the ground truth's Moshi (its words, stamped on the 80 ms grid as a text stream
  would be, and channel 0 as its audio): the ceiling of the judges, and their test.

`measure_rtf` times the session alone: wall time per 80 ms step, over B conversations at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..inference.transcript import Word, words_from_tokens
from .dialogue_data import Conversation

if TYPE_CHECKING:
    from ..inference.models import LoadedModels
    from ..inference.sampling import SamplingConfig

FRAME_S = 0.08


@dataclass
class RunOutput:
    """What Moshi said in one conversation: `words` from its text stream, `audio` [T] float32 (None: not kept)."""

    conversation: Conversation
    words: list[Word]
    audio: np.ndarray | None
    sample_rate: int
    frames: int = 0  # session steps of this conversation


class Runner(Protocol):
    name: str
    sample_rate: int

    def run(self, conversations: Sequence[Conversation], progress: bool = True) -> Iterator[RunOutput]:
        """One output per conversation, in the order they finish."""
        ...


def _progress(total: int, desc: str, enabled: bool, unit: str = "frame"):
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def _frames(audio: np.ndarray, frame_size: int) -> np.ndarray:
    """Mono [T] -> [n, frame_size], the last frame completed with silence."""
    n = max(1, math.ceil(audio.shape[0] / frame_size))
    padded = np.zeros(n * frame_size, dtype=np.float32)
    padded[: audio.shape[0]] = audio
    return padded.reshape(n, frame_size)


@dataclass
class _Row:
    conv: Conversation
    frames: np.ndarray  # [n, frame_size] the user's channel
    t: int = 0
    text: list[int] = field(default_factory=list)
    pcm: list[np.ndarray] = field(default_factory=list)


class ModelRunner:
    """A model (`inference.models.LoadedModels`) as Moshi over conversations, `batch_size` at a time."""

    def __init__(self, models: LoadedModels, batch_size: int, text_sampling: SamplingConfig,
                 audio_sampling: SamplingConfig, seed: int, keep_audio: bool = True, compile: bool = False) -> None:
        self.models, self.batch_size, self.seed, self.keep_audio = models, batch_size, seed, keep_audio
        self.compile = compile  # DuplexSession(compile=True): same results, compiled once per batch size
        self.text_sampling, self.audio_sampling = text_sampling, audio_sampling
        self.name = str(models.files.source)
        self.sample_rate = models.mimi.sample_rate
        self.frame_size = models.mimi.frame_size

    def _user(self, conv: Conversation) -> np.ndarray:
        return conv.read_channels(self.sample_rate)[1]

    def run(self, conversations: Sequence[Conversation], progress: bool = True) -> Iterator[RunOutput]:
        import torch

        from ..inference.session import DuplexSession

        mimi, lm = self.models.mimi, self.models.lm
        fs, tail = self.frame_size, lm.cfg.max_delay
        frame_s = fs / self.sample_rate
        queue = list(conversations)
        total = sum(math.ceil(c.duration / frame_s) + tail for c in queue)
        rows: list[_Row | None] = [None] * self.batch_size
        bar = _progress(total, "eval dialogue", progress)
        with DuplexSession(mimi, lm, self.batch_size, self.text_sampling, self.audio_sampling, self.seed,
                           start_all=False, compile=self.compile) as session:
            while queue or any(rows):
                for r in range(self.batch_size):
                    if rows[r] is None and queue:
                        conv = queue.pop(0)
                        rows[r] = _Row(conv, _frames(self._user(conv), fs))
                        session.join(r, seed=(self.seed + conv.index) % 2**64)
                batch = np.zeros((self.batch_size, 1, fs), dtype=np.float32)
                for r, row in enumerate(rows):
                    if row is not None and row.t < len(row.frames):
                        batch[r, 0] = row.frames[row.t]
                out = session.step(torch.from_numpy(batch).to(session.device))
                text = out.text.cpu().tolist()
                pcm = out.pcm[:, 0].float().cpu().numpy() if self.keep_audio else None
                bar.update(sum(row is not None for row in rows))
                for r, row in enumerate(rows):
                    if row is None:
                        continue
                    row.text.append(int(text[r]))
                    if pcm is not None:
                        row.pcm.append(pcm[r].copy())
                    row.t += 1
                    if row.t >= len(row.frames) + tail:
                        session.leave(r)
                        rows[r] = None
                        yield self._output(row, frame_s)
        bar.close()

    def _output(self, row: _Row, frame_s: float) -> RunOutput:
        words = words_from_tokens(row.text, self.models.tokenizer, frame_s)
        audio = np.concatenate(row.pcm) if row.pcm else None
        return RunOutput(row.conv, words, audio, self.sample_rate, row.t)


def grid_words(words: Sequence[Word], frame_s: float = FRAME_S) -> list[Word]:
    """Words stamped as a text stream stamps them: the start on its frame's start, the end one frame later than
    the frame of the word's end (at least one frame after the start)."""
    out = []
    for w in words:
        start = math.floor(w.start / frame_s + 1e-6)
        end = max(start + 1, math.floor(w.end / frame_s + 1e-6))
        out.append(Word(w.text, round(start * frame_s, 3), round(end * frame_s, 3)))
    return out


class OracleRunner:
    """The ground truth's Moshi, replayed: its words on the frame grid, channel 0 as its audio.

    `transform(conv, words) -> words` alters the words (tests use it to make a wrong oracle)."""

    name = "oracle (the ground truth's Moshi channel)"

    def __init__(self, sample_rate: int = 24_000, keep_audio: bool = True,
                 transform: Callable[[Conversation, list[Word]], list[Word]] | None = None) -> None:
        self.sample_rate, self.keep_audio, self.transform = sample_rate, keep_audio, transform

    def run(self, conversations: Sequence[Conversation], progress: bool = True) -> Iterator[RunOutput]:
        bar = _progress(len(conversations), "eval dialogue (oracle)", progress, unit="conversation")
        for conv in conversations:
            words = grid_words(conv.moshi_words)
            if self.transform is not None:
                words = self.transform(conv, words)
            audio = conv.read_channels(self.sample_rate)[0] if self.keep_audio else None
            bar.update(1)
            yield RunOutput(conv, words, audio, self.sample_rate, math.ceil(conv.duration / FRAME_S))
        bar.close()


@dataclass(frozen=True)
class RtfResult:
    """Timing of `frames` session steps with `batch` conversations at once (after a warm-up)."""

    batch: int
    threads: int
    step_seconds: tuple[float, ...]
    frame_seconds: float = FRAME_S

    @property
    def rtf(self) -> float:
        """Mean wall time per step / frame duration (< 1: faster than real time)."""
        return float(np.mean(self.step_seconds)) / self.frame_seconds

    def summary(self) -> dict[str, float | int]:
        s = np.asarray(self.step_seconds)
        return {"batch": self.batch, "threads": self.threads, "frames": len(s), "rtf": round(self.rtf, 4),
                "step_ms_p50": round(float(np.percentile(s, 50)) * 1000, 2),
                "step_ms_p90": round(float(np.percentile(s, 90)) * 1000, 2),
                "step_ms_max": round(float(s.max()) * 1000, 2),
                "share_within_frame": round(float(np.mean(s <= self.frame_seconds)), 4)}


def measure_rtf(models: LoadedModels, users: Sequence[np.ndarray], batch: int, frames: int,
                text_sampling: SamplingConfig, audio_sampling: SamplingConfig, seed: int = 0, warmup: int = 5,
                threads: int = 1, compile: bool = False) -> RtfResult:
    """Step a session of `batch` rows over the user channels `users` (mono [T] each, cycled over the rows) for
    `warmup` + `frames` frames; the wall time of each of the last `frames` steps (host sync included)."""
    import torch

    from ..inference.session import DuplexSession

    fs = models.mimi.frame_size
    need = (warmup + frames) * fs
    rows = []
    for i in range(batch):
        audio = np.zeros(need, dtype=np.float32)
        src = users[i % len(users)][:need]
        audio[: src.shape[0]] = src
        rows.append(audio.reshape(warmup + frames, fs))
    stacked = torch.from_numpy(np.stack(rows, axis=1)[:, :, None, :].copy())  # [steps, B, 1, fs]
    times = []
    with DuplexSession(models.mimi, models.lm, batch, text_sampling, audio_sampling, seed, compile=compile) as session:
        for t in range(warmup + frames):
            start = time.perf_counter()
            out = session.step(stacked[t].to(session.device))
            out.text.cpu()  # the caller needs the text on the host every frame: count that sync
            out.pcm.cpu()
            if t >= warmup:
                times.append(time.perf_counter() - start)
    return RtfResult(batch, threads, tuple(times), fs / models.mimi.sample_rate)
