"""Whole conversations: over a recording (`talk_file`) or through the microphone and speaker (`talk_live`).

Both connect (`Connection.open`), hold the conversation (`conversation.converse`) and close; Ctrl-C ends the
conversation early and keeps what was recorded; a conversation that fails mid-way raises ClientError with what was
recorded so far as `err.recording`. `run_file` is the synchronous form for scripts, tests and
benchmarks: `rec = run_file("ws://127.0.0.1:8998/api/chat", pcm)` with pcm mono float32 [T] at 24 kHz.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .connection import ClientError, Connection
from .conversation import converse, file_frames, install_stop
from .recording import FRAME_SIZE, SAMPLE_RATE, Recording


@dataclass(frozen=True)
class Options:
    """How to connect and pace. `window` (with `pace=False`): frames in flight before the client waits."""

    token: str | None = None
    insecure: bool = False
    ca_cert: str | None = None  # a PEM file of the certificate (or its CA) a wss:// server must present
    timeout: float = 30.0  # seconds: connecting, the handshake, and any silence of the server mid-conversation
    drain_timeout: float = 5.0  # seconds without a new frame, after the last one sent, before giving up on it
    pace: bool = True
    window: int | None = None
    tail_seconds: float = 1.0  # silence sent after a recording so that Moshi can finish its sentence


async def _keeping(rec: Recording, conversation) -> None:
    """Run `conversation`; a ClientError raised mid-way carries what was recorded (`err.recording`), so that a
    conversation the server ended (shutdown, a dropped connection) can still be written."""
    try:
        await conversation
    except ClientError as err:
        err.recording = rec
        raise


async def talk_file(url: str, pcm: np.ndarray, options: Options = Options(),
                    on_text: Callable[[str], None] | None = None, stop: asyncio.Event | None = None) -> Recording:
    """A conversation over `pcm` (mono float32 [T] at 24 kHz), then `tail_seconds` of silence."""
    rec = Recording()
    stop = stop or asyncio.Event()
    remove = install_stop(stop)
    try:
        conn = await Connection.open(url, token=options.token, timeout=options.timeout, insecure=options.insecure,
                                     ca_cert=options.ca_cert)
        try:
            tail = int(round(options.tail_seconds / rec.frame_seconds))
            frames = file_frames(np.asarray(pcm, dtype=np.float32), rec.frame_size, tail, stop)
            await _keeping(rec, converse(conn, frames, rec, pace=options.pace, window=options.window,
                                         timeout=options.timeout, drain_timeout=options.drain_timeout,
                                         on_text=on_text))
        finally:
            await conn.close()
    finally:
        remove()
    return rec


async def talk_live(url: str, options: Options = Options(), duration: float | None = None,
                    on_text: Callable[[str], None] | None = None, max_buffer: float = 0.5,
                    keep_audio: bool = True) -> Recording:
    """A conversation through the microphone and speaker until Ctrl-C (or `duration` seconds). `keep_audio=False`
    keeps no audio in memory (nothing to write: memory stays flat however long the conversation)."""
    from .live import Microphone, SpeakerBuffer

    rec = Recording(keep_audio=keep_audio)
    stop = asyncio.Event()
    remove = install_stop(stop)
    try:
        conn = await Connection.open(url, token=options.token, timeout=options.timeout, insecure=options.insecure,
                                     ca_cert=options.ca_cert)
        try:
            speaker = SpeakerBuffer(int(max_buffer * SAMPLE_RATE))
            mic = Microphone(SAMPLE_RATE, FRAME_SIZE, speaker)
            # the microphone paces itself; the last frames need no drain (the speaker is closing)
            await _keeping(rec, converse(conn, mic.frames(stop, duration), rec, pace=False, timeout=options.timeout,
                                         drain_timeout=0.5, on_text=on_text, on_audio=speaker.push))
        finally:
            await conn.close()
    finally:
        remove()
    return rec


def run_file(url: str, pcm: np.ndarray, options: Options = Options(),
             on_text: Callable[[str], None] | None = None) -> Recording:
    """`talk_file` in its own event loop."""
    return asyncio.run(talk_file(url, pcm, options, on_text))
