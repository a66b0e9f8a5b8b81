"""What a client conversation produced: both voices, Moshi's words with times, and per-frame timing.

Layout as `openmoshi chat` writes it: a stereo wav, left = Moshi (what the server sent, decoded), right = the user
(what the client sent, tail silence included), both on the same 80 ms frame grid: Moshi's frame t is the server's
answer to the user's frame t. Moshi's words go to a JSON file in Kyutai's alignment layout and to SRT, like chat.

Times of words. The server sends text pieces (the word-boundary mark already a space, PAD never sent) between
audio chunks; a piece is stamped with the Moshi frame that was being received when it came (the count of whole
frames received so far), so a word's start is within a frame of the audio it goes with.

Timing. `sent_at[t]`: when the client sent the user's frame t; `received_at[t]`: when the client had decoded all of
Moshi's frame t (seconds from the start). `latencies()` is their difference: the round trip of one frame through
the network, the server's queue, the model step and both Opus codecs. A server steps on its own clock, so frame t
is its t-th step: exact when the user's frames reach it in time, one frame off after a step it fed silence.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..inference.transcript import Word, write_json, write_srt

FRAME_SIZE = 1920  # 80 ms at 24 kHz: one model step
SAMPLE_RATE = 24_000


def words_from_pieces(pieces: list[tuple[int, str]], frame_seconds: float) -> list[Word]:
    """(frame, piece) in arrival order -> words. A piece starting with a space starts a word; others continue it."""
    words: list[Word] = []
    text, first, last = "", 0, 0

    def close() -> None:
        if text.strip():
            words.append(Word(text.strip(), round(first * frame_seconds, 3), round((last + 1) * frame_seconds, 3)))

    for frame, piece in pieces:
        if not piece:
            continue
        if piece[0].isspace() or not text.strip():
            close()
            text, first = "", frame
        text += piece
        last = frame
    close()
    return words


def percentile_ms(values: np.ndarray, q: float) -> float | None:
    return None if values.size == 0 else round(float(np.percentile(values, q)) * 1000, 1)


@dataclass
class Recording:
    """Filled by `converse` as the conversation goes (see the module docstring for the meaning of each field)."""

    sample_rate: int = SAMPLE_RATE
    frame_size: int = FRAME_SIZE
    user: list[np.ndarray] = field(default_factory=list)  # frames sent, [frame_size] each
    moshi: list[np.ndarray] = field(default_factory=list)  # decoded chunks as they came
    moshi_samples: int = 0
    pieces: list[tuple[int, str]] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    late_frames: int = 0  # frames the pacing sent later than their time (a busy client machine)
    keep_audio: bool = True  # False: count samples only (a long microphone conversation with nothing to write)

    @property
    def frame_seconds(self) -> float:
        return self.frame_size / self.sample_rate

    def add_moshi(self, pcm: np.ndarray, now: float) -> None:
        """Append decoded samples; stamp every frame they complete with `now`."""
        if pcm.size == 0:
            return
        if self.keep_audio:
            self.moshi.append(pcm)
        self.moshi_samples += pcm.size
        while len(self.received_at) < self.moshi_samples // self.frame_size:
            self.received_at.append(now)

    @property
    def frames_received(self) -> int:
        return len(self.received_at)

    @property
    def frames_sent(self) -> int:
        return len(self.sent_at)

    def add_user(self, frame: np.ndarray, sent: float) -> None:
        self.sent_at.append(sent)
        if self.keep_audio:
            self.user.append(frame)

    def stereo(self) -> np.ndarray:
        """[T, 2] float32, T = the samples the user sent: left Moshi (zero-padded or cut to T), right the user."""
        right = np.concatenate(self.user) if self.user else np.zeros(0, np.float32)
        left = np.zeros_like(right)
        if self.moshi:
            moshi = np.concatenate(self.moshi)[: right.size]
            left[: moshi.size] = moshi
        return np.stack([left, right], axis=1)

    def words(self) -> list[Word]:
        return words_from_pieces(self.pieces, self.frame_seconds)

    def text(self) -> str:
        return "".join(piece for _, piece in self.pieces).strip()

    def latencies(self) -> np.ndarray:
        """Seconds from sending the user's frame t to having Moshi's frame t, for every answered frame."""
        n = min(len(self.sent_at), len(self.received_at))
        return np.asarray(self.received_at[:n], dtype=np.float64) - np.asarray(self.sent_at[:n], dtype=np.float64)

    def timing(self) -> dict:
        """A summary (milliseconds) and the per-frame times (seconds), for the report and `--timing FILE.json`."""
        lat = self.latencies()
        return {
            "frame_seconds": self.frame_seconds,
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "late_sends": self.late_frames,
            "latency_ms": {"median": percentile_ms(lat, 50), "p90": percentile_ms(lat, 90),
                           "p99": percentile_ms(lat, 99),
                           "max": None if lat.size == 0 else round(float(lat.max()) * 1000, 1)},
            "sent_at": [round(t, 5) for t in self.sent_at],
            "received_at": [round(t, 5) for t in self.received_at],
        }

    def summary(self) -> str:
        t = self.timing()
        lat = t["latency_ms"]
        line = (f"{t['frames_sent']} frames sent, {t['frames_received']} received "
                f"({t['frames_received'] * self.frame_seconds:.2f} s of Moshi)")
        if lat["median"] is not None:
            line += f"; round trip per frame: median {lat['median']:.0f} ms, p99 {lat['p99']:.0f} ms"
        return line

    def write(self, paths: dict[str, Path | None]) -> None:
        """Write what `paths` names (keys --output, --text-json, --text-srt, --timing; None: not written)."""
        from ..audio import write_wav
        from ..io_safety import write_text

        words = self.words()
        if (out := paths.get("--output")) is not None:
            write_wav(out, self.stereo(), self.sample_rate, channels_last=True)
            print(f"wrote {out} ({self.frames_sent * self.frame_seconds:.2f} s, stereo: left Moshi, right you)",
                  file=sys.stderr)
        if (path := paths.get("--text-json")) is not None:
            write_json(path, words)
        if (path := paths.get("--text-srt")) is not None:
            write_srt(path, words)
        if (path := paths.get("--timing")) is not None:
            write_text(path, json.dumps(self.timing(), indent=1) + "\n")
