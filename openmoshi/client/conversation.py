"""The duplex loop of a client conversation: send the user's frames as Ogg/Opus, receive Moshi's audio and words.

Two tasks share one connection. The sender takes 80 ms frames from a source (a recording or the microphone),
encodes them and sends each as it is due: paced in real time (`pace=True`: frame t leaves at t * 80 ms, as a
person talks), or as fast as the server answers (`window=N`: at most N frames sent and not yet answered; for
tests and batch work). The receiver decodes Moshi's audio into the `Recording`, stamps each completed frame's
arrival, and collects the text pieces. When the source ends, the client waits until every frame sent has been
answered (or `drain_timeout` seconds pass without a new one), then closes.

Ends: the server's error kind raises `ServerError` (its reason); a server that closes mid-conversation, goes
silent for `timeout` seconds or breaks the protocol raises `ClientError`. `stop` (an asyncio.Event, set by
Ctrl-C) ends the source early; what was recorded is kept.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable

import numpy as np

from ..server.opus import OpusDecoder, OpusEncoder, OpusError
from ..server.protocol import Kind
from .connection import ClientError, Connection
from .recording import Recording


async def file_frames(pcm: np.ndarray, frame_size: int, tail_frames: int, stop: asyncio.Event | None = None
                      ) -> AsyncIterator[np.ndarray]:
    """The recording [T] cut into frames (the last one completed with silence), then `tail_frames` of silence."""
    n = -(-pcm.shape[0] // frame_size)
    padded = np.zeros((n + tail_frames) * frame_size, dtype=np.float32)
    padded[: pcm.shape[0]] = pcm
    for t in range(n + tail_frames):
        if stop is not None and stop.is_set():
            return
        yield padded[t * frame_size:(t + 1) * frame_size]


async def converse(conn: Connection, frames: AsyncIterator[np.ndarray], rec: Recording, *, pace: bool = True,
                   window: int | None = None, timeout: float = 30.0, drain_timeout: float = 5.0,
                   on_text: Callable[[str], None] | None = None,
                   on_audio: Callable[[np.ndarray], None] | None = None) -> Recording:
    """Hold the conversation until `frames` ends and is answered; returns `rec`, filled (see the docstring)."""
    encoder, decoder = OpusEncoder(rec.sample_rate, rec.frame_size), OpusDecoder(rec.sample_rate)
    progress = asyncio.Event()  # set whenever a frame of Moshi's audio completes
    start = time.perf_counter()

    async def sender() -> None:
        async for frame in frames:
            if window is not None:
                while rec.frames_sent - rec.frames_received >= window:
                    progress.clear()
                    await progress.wait()
            if pace:
                delay = start + rec.frames_sent * rec.frame_seconds - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -rec.frame_seconds:
                    rec.late_frames += 1
            try:
                chunk = encoder.encode(np.asarray(frame, dtype=np.float32).reshape(-1))
            except OpusError as err:
                raise ClientError(f"cannot encode the audio: {err}") from None
            await conn.send_audio(chunk)
            rec.add_user(np.asarray(frame, dtype=np.float32), time.perf_counter() - start)

    async def receiver() -> None:
        try:
            await receive_all()
        finally:
            progress.set()  # wake a sender or a drain waiting on it: the conversation is over

    async def receive_all() -> None:
        while True:
            try:
                msg = await conn.receive(timeout)
            except asyncio.TimeoutError:
                raise ClientError(f"no message from the server for {timeout:g} s") from None
            if msg is None:
                return
            if msg.kind is Kind.AUDIO:
                try:
                    pcm = decoder.decode(msg.data)
                except OpusError as err:
                    raise ClientError(f"the server's audio is not valid Ogg/Opus: {err}") from None
                before = rec.frames_received
                rec.add_moshi(pcm, time.perf_counter() - start)
                if on_audio is not None and pcm.size:
                    on_audio(pcm)
                if rec.frames_received != before:
                    progress.set()
            elif msg.kind in (Kind.TEXT, Kind.COLORED_TEXT):
                piece = msg.data if msg.kind is Kind.TEXT else msg.data[1]
                rec.pieces.append((rec.frames_received, piece))
                if on_text is not None:
                    on_text(piece)
            # handshake again, control, metadata, ping: nothing for this client to do

    send_task = asyncio.create_task(sender())
    recv_task = asyncio.create_task(receiver())
    try:
        await asyncio.wait({send_task, recv_task}, return_when=asyncio.FIRST_COMPLETED)
        if send_task.done() and send_task.exception() is not None:
            # a broken send: the receiver usually holds the server's reason (the error kind came first)
            await asyncio.wait({recv_task}, timeout=1.0)
            if recv_task.done():
                recv_task.result()  # ServerError / ClientError: the server's words
                raise ClientError(f"the server closed the conversation before it ended ({conn.close_reason})")
            raise send_task.exception()
        if recv_task.done():
            recv_task.result()  # ServerError / ClientError
            if not send_task.done():
                raise ClientError(f"the server closed the conversation before it ended ({conn.close_reason})")
        while rec.frames_received < rec.frames_sent and not recv_task.done():
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), drain_timeout)
            except asyncio.TimeoutError:
                break  # the last frames never came: the recording keeps what did
        if recv_task.done():
            recv_task.result()
    finally:
        for task in (send_task, recv_task):
            task.cancel()
        await asyncio.gather(send_task, recv_task, return_exceptions=True)
    return rec


def install_stop(stop: asyncio.Event) -> Callable[[], None]:
    """Ctrl-C sets `stop` (the conversation ends and what was recorded is written); a second one interrupts.
    Returns a function that removes the handler. Does nothing off the main thread or without signals."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C is KeyboardInterrupt as usual

    try:
        loop.add_signal_handler(signal.SIGINT, first)
    except (NotImplementedError, RuntimeError, ValueError):
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGINT)
