"""Microphone and speaker for `openmoshi client` (sounddevice, the optional `audio` extra).

One duplex sounddevice stream at 24 kHz, one 80 ms block per callback. The callback (PortAudio's thread) only
moves samples: the microphone's block goes to the asyncio loop (`call_soon_threadsafe`), and the speaker takes
the next block from a FIFO of Moshi's decoded audio, or silence when none has come (the network's jitter is
heard as a gap, never as a growing delay: the FIFO is cut back when it holds more than `max_buffer` seconds).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator

import numpy as np

from ..sound_devices import unavailable  # noqa: F401  (the mode's check, used by its command)


class SpeakerBuffer:
    """A thread-safe FIFO of samples: the receiver pushes Moshi's audio, the audio callback pulls blocks."""

    def __init__(self, max_samples: int) -> None:
        self._lock = threading.Lock()
        self._data = np.zeros(0, dtype=np.float32)
        self.max_samples = max_samples
        self.dropped = 0  # samples cut to keep the delay bounded

    def push(self, pcm: np.ndarray) -> None:
        with self._lock:
            self._data = np.concatenate([self._data, pcm.astype(np.float32, copy=False)])
            if self._data.size > self.max_samples:
                self.dropped += self._data.size - self.max_samples
                self._data = self._data[-self.max_samples:]

    def pull(self, n: int) -> np.ndarray:
        """`n` samples: the oldest held, completed with silence."""
        out = np.zeros(n, dtype=np.float32)
        with self._lock:
            take = min(n, self._data.size)
            out[:take] = self._data[:take]
            self._data = self._data[take:]
        return out


class Microphone:
    """The duplex stream; `frames()` yields the microphone's 80 ms frames until `stop` or `duration`."""

    def __init__(self, sample_rate: int, frame_size: int, speaker: SpeakerBuffer) -> None:
        self.sample_rate, self.frame_size, self.speaker = sample_rate, frame_size, speaker
        self._queue: asyncio.Queue[np.ndarray] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    def _callback(self, indata, outdata, frames, _time, _status) -> None:  # PortAudio's thread
        self._loop.call_soon_threadsafe(self._queue.put_nowait, indata[:, 0].copy())
        outdata[:, 0] = self.speaker.pull(frames)

    async def frames(self, stop: asyncio.Event, duration: float | None) -> AsyncIterator[np.ndarray]:
        import sounddevice as sd

        max_frames = None if duration is None else int(duration * self.sample_rate / self.frame_size)
        count = 0
        with sd.Stream(samplerate=self.sample_rate, blocksize=self.frame_size, channels=1, dtype="float32",
                       callback=self._callback):
            print("listening: talk to Moshi (Ctrl-C to stop)", file=sys.stderr)
            while not stop.is_set() and (max_frames is None or count < max_frames):
                getter = asyncio.ensure_future(self._queue.get())
                stopper = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({getter, stopper}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if getter not in done:
                    getter.cancel()
                    if not stop.is_set():
                        print("\nno audio from the microphone for 5 s: stopping", file=sys.stderr)
                    return
                count += 1
                yield getter.result()
