"""One conversation of the engine (a row of its batch) and the callbacks the engine's worker thread posts to
the event loop for it.

`Conversation` holds the queues between the connection and the worker: `inbox` (user frames, under the engine's
lock) and `outbox` (Moshi's frames and text tokens, event loop only), the per-conversation sampling and seeds, and
the counters the log line and /api/status report.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(eq=False)  # identity: a conversation is equal only to itself
class Conversation:
    """One conversation (one row). Counters are read by the connection's log line and /api/status."""

    id: int
    row: int
    peer: str
    text_sampling: object
    audio_sampling: object
    seed: int
    audio_seed: int | None
    inbox: collections.deque = field(default_factory=collections.deque)  # user frames [frame_size], engine lock
    outbox: collections.deque = field(default_factory=collections.deque)  # (pcm [frame_size], [tokens]), loop only
    opened: float = field(default_factory=time.monotonic)
    ready: asyncio.Future | None = None  # set on the loop once the row has joined
    wake: asyncio.Event | None = None  # set on the loop when the outbox grows or the conversation ends
    end_reason: str | None = None  # set when the engine ends it (server error, shutdown)
    steps: int = 0
    frames_in: int = 0
    dropped_in: int = 0
    silence_fills: int = 0
    dropped_out: int = 0
    _pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    _closing: bool = False  # close() was called (or the engine ended it)
    _released: bool = False  # its row is back in the free list

    def summary(self) -> str:
        return (f"{self.steps} steps, {self.frames_in} frames in, {self.silence_fills} filled with silence, "
                f"{self.dropped_in} input frames dropped, {self.dropped_out} output frames dropped")


def percentiles(values, qs=(50, 90, 99)) -> dict[str, float | None]:
    """{"p50": ms, ...} of a sequence of seconds (None when empty)."""
    arr = np.asarray(list(values), dtype=np.float64)
    return {f"p{q}": (round(float(np.percentile(arr, q)) * 1000, 3) if arr.size else None) for q in qs}




# ---- callbacks the worker posts to the event loop ----------------------------------------------------------
def joined(conv: Conversation) -> None:
    if conv.ready is not None and not conv.ready.done():
        conv.ready.set_result(True)
    wake(conv)


def wake(conv: Conversation) -> None:
    if conv.ready is not None and not conv.ready.done() and conv.end_reason is not None:
        conv.ready.set_result(False)
    if conv.wake is not None:
        conv.wake.set()


def deliver(deliveries: list, max_frames: int) -> None:
    for conv, pcm, tokens in deliveries:
        if conv._closing:
            continue
        conv.outbox.append((pcm, tokens))
        while len(conv.outbox) > max_frames:
            conv.outbox.popleft()
            conv.dropped_out += 1
        wake(conv)


def sampling_with(default, temperature: float | None, top_k: int | None):
    """The server's default with the query's overrides (a given temperature turns `greedy` off)."""
    changes: dict = {}
    if temperature is not None:
        changes.update(temperature=temperature, greedy=False)
    if top_k is not None:
        changes["top_k"] = top_k
    return replace(default, **changes) if changes else default
