"""One websocket at `/api/chat`: the protocol between a client and its conversation in the engine.

Order: the token is checked, the query parsed, a row reserved (a full server answers "server full" at once);
once the row has joined, the handshake (0x00) goes out, then, if the client asked with `metadata=1`, a metadata
message (0x04). Two tasks then run until either ends the connection: the receiver (protocol decode, Opus decode
in the codec thread pool, `engine.push_audio`) and the sender (the conversation's outbox -> text pieces and Opus
pages, encoded in the pool). Every close the server initiates is preceded by an error message (0x05) with the
reason. A client's bad input ends only its own connection and is logged as one line, without a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from . import protocol
from .config import ServerConfig
from .engine import Conversation, Engine, ServerFull
from .opus import OpusDecoder, OpusEncoder, OpusError
from .protocol import Kind, ProtocolError

log = logging.getLogger("openmoshi.server")


@dataclass
class Ending:
    """Why a connection ends: `reason` for the log, `error` (if any) sent to the client before the close."""

    reason: str
    error: str | None = None


def peer_of(request: web.Request) -> str:
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
    remote = request.remote or "?"
    return f"{forwarded} via {remote}" if forwarded else remote


def token_ok(request: web.Request, token: str | None) -> bool:
    if token is None:
        return True
    given = request.query.get("token")
    auth = request.headers.get("Authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class ChatConnection:
    """Runs one websocket (see the module docstring); `await run()` returns when it is closed."""

    def __init__(self, request: web.Request, engine: Engine, config: ServerConfig, tokenizer, pool: Executor) -> None:
        self.request, self.engine, self.config, self.tokenizer, self.pool = request, engine, config, tokenizer, pool
        self.peer = peer_of(request)
        self.transport = request.transport
        self.ws = web.WebSocketResponse(max_msg_size=protocol.MAX_MESSAGE_BYTES, heartbeat=config.heartbeat,
                                        compress=False, timeout=2.0, writer_limit=64 * 1024)
        self.conv: Conversation | None = None
        self.started = time.monotonic()

    async def run(self) -> web.WebSocketResponse:
        if self.config.send_buffer_bytes and self.transport is not None:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer_bytes)
        await self.ws.prepare(self.request)
        ending = Ending("closed")
        try:
            ending = await self._converse()
        except ConnectionError as err:  # the client went away while we wrote (handshake, metadata): its doing
            ending = Ending(f"the connection was lost ({type(err).__name__})")
        except asyncio.CancelledError:
            ending = Ending("the server is shutting down", "the server is shutting down")
            raise
        finally:
            if self.conv is not None:
                self.engine.close(self.conv)
            await self._close(ending)
            self._log_end(ending)
        return self.ws

    async def _converse(self) -> Ending:
        if not token_ok(self.request, self.config.token):
            return Ending("refused: missing or wrong token", "unauthorized: missing or wrong token")
        query = {k: v for k, v in self.request.query.items() if k not in ("token", "metadata")}
        try:
            params, ignored = protocol.parse_query(query)
        except ProtocolError as err:
            return Ending(f"refused: bad query ({err})", f"bad query: {err}")
        try:
            self.conv = conv = self.engine.open(self.peer, params)
        except ServerFull as err:
            return Ending(f"refused: {err}", str(err))
        t, a = conv.text_sampling, conv.audio_sampling
        log.info("conversation %d from %s opened (row %d, seed %d, text %s, audio %s%s)", conv.id, self.peer,
                 conv.row, conv.seed, _sampling_str(t), _sampling_str(a),
                 f", ignored: {', '.join(ignored)}" if ignored else "")
        try:
            joined = await asyncio.wait_for(asyncio.shield(conv.ready), self.config.handshake_timeout)
        except asyncio.TimeoutError:
            return Ending("the conversation could not start in time", "server busy: the conversation could not start")
        if not joined:
            return Ending(conv.end_reason or "could not start", conv.end_reason or "could not start")
        await self.ws.send_bytes(protocol.handshake())
        if self.request.query.get("metadata") in ("1", "true", "yes"):
            await self.ws.send_bytes(protocol.encode(protocol.Message(Kind.METADATA, self._metadata(ignored))))
        receiver = asyncio.ensure_future(self._receive())
        sender = asyncio.ensure_future(self._send())
        try:
            done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            first = receiver if receiver in done else sender
            return first.result()
        finally:
            for task in (receiver, sender):
                task.cancel()
            await asyncio.gather(receiver, sender, return_exceptions=True)

    def _metadata(self, ignored: list[str]) -> dict:
        conv, engine = self.conv, self.engine
        return {"server": "openmoshi", "model": self.config.model_name, "sample_rate": engine.sample_rate,
                "frame_size": engine.frame_size, "conversation": conv.id, "text_seed": conv.seed,
                "audio_seed": conv.audio_seed, "text_temperature": conv.text_sampling.temperature,
                "text_topk": conv.text_sampling.top_k, "audio_temperature": conv.audio_sampling.temperature,
                "audio_topk": conv.audio_sampling.top_k, "ignored": ignored}

    # ---- client -> conversation ----------------------------------------------------------------------------
    async def _receive(self) -> Ending:
        loop = asyncio.get_running_loop()
        decoder = OpusDecoder(self.engine.sample_rate)
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.BINARY:
                try:
                    message = protocol.decode(msg.data)
                except ProtocolError as err:
                    return Ending(f"protocol error: {err}", f"protocol error: {err}")
                if message.kind is Kind.AUDIO:
                    try:
                        pcm = await loop.run_in_executor(self.pool, decoder.decode, message.data)
                    except OpusError as err:
                        return Ending(f"bad audio: {err}", f"bad audio: {err}")
                    dropped = self.engine.push_audio(self.conv, pcm)
                    if dropped:  # faster than real time (or a server behind): read this client no faster
                        await asyncio.sleep(min(2.0, dropped * self.engine.frame_seconds))
                elif message.kind is Kind.ERROR:
                    return Ending(f"the client reported an error: {message.data[:200]}")
                # handshake, control, metadata, ping and text from a client carry nothing the server acts on
            elif msg.type == WSMsgType.TEXT:
                return Ending("protocol error: text frame", "protocol error: messages are binary, got a text frame")
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return Ending("the client closed the connection")
            elif msg.type == WSMsgType.ERROR:
                err = self.ws.exception()
                text = str(err) if err is not None else "websocket error"
                if "too big" in text.lower() or "size" in text.lower():
                    return Ending(f"protocol error: {text}",
                                  f"protocol error: message over the {protocol.MAX_MESSAGE_BYTES}-byte limit")
                return Ending(f"connection error: {text}", f"connection error: {text}")

    # ---- conversation -> client ------------------------------------------------------------------------------
    async def _send(self) -> Ending:
        from ..lm.text import TextStreamDecoder

        loop = asyncio.get_running_loop()
        conv, cfg = self.conv, self.config
        encoder = OpusEncoder(self.engine.sample_rate)
        text_decoder = TextStreamDecoder(self.tokenizer)
        stalled_since: float | None = None
        while True:
            try:
                await asyncio.wait_for(conv.wake.wait(), 0.25)
            except asyncio.TimeoutError:
                pass
            conv.wake.clear()
            if conv.end_reason is not None:
                return Ending(conv.end_reason, conv.end_reason)
            if self.transport is None or self.transport.is_closing():
                return Ending("the connection was lost")
            if self.transport.get_write_buffer_size() > cfg.max_unsent_bytes:
                now = time.monotonic()
                stalled_since = stalled_since or now
                if now - stalled_since > cfg.stall_timeout:
                    return Ending(f"the client did not read for {cfg.stall_timeout:g} s",
                                  f"closing: the client did not read Moshi's audio for {cfg.stall_timeout:g} s")
                continue  # the outbox keeps its bound (older frames are dropped) while the client catches up
            stalled_since = None
            if not conv.outbox:
                continue
            items = list(conv.outbox)
            conv.outbox.clear()
            pieces = [text_decoder.push(tok) for _, tokens in items for tok in tokens]
            pcm = [p for p, _ in items if p is not None]
            try:
                for piece in pieces:
                    if piece:
                        await self.ws.send_bytes(protocol.text(piece))
                if pcm:
                    data = await loop.run_in_executor(self.pool, encoder.encode, np.concatenate(pcm))
                    if data:
                        await asyncio.wait_for(self.ws.send_bytes(protocol.audio(data)), cfg.stall_timeout)
            except asyncio.TimeoutError:
                return Ending(f"the client did not read for {cfg.stall_timeout:g} s",
                              f"closing: the client did not read Moshi's audio for {cfg.stall_timeout:g} s")
            except (ConnectionError, RuntimeError) as err:  # aiohttp: closing transport
                return Ending(f"the connection was lost ({type(err).__name__})")

    # ---- the end ------------------------------------------------------------------------------------------------
    async def _close(self, ending: Ending) -> None:
        ws = self.ws
        try:
            if ending.error and not ws.closed and not (self.transport is None or self.transport.is_closing()):
                await asyncio.wait_for(ws.send_bytes(protocol.error(ending.error)), 2.0)
            if not ws.closed:
                code = WSCloseCode.OK if ending.error is None else WSCloseCode.POLICY_VIOLATION
                await asyncio.wait_for(ws.close(code=code, message=ending.reason[:100].encode()), 3.0)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            if self.transport is not None and not ws.closed:
                self.transport.abort()  # a client that reads nothing cannot hold the socket open

    def _log_end(self, ending: Ending) -> None:
        seconds = time.monotonic() - self.started
        if self.conv is None:
            log.info("connection from %s %s", self.peer, ending.reason)
            return
        conv = self.conv
        log.info("conversation %d from %s closed after %.1f s: %s (%s)", conv.id, self.peer, seconds,
                 ending.reason, conv.summary())


def _sampling_str(cfg) -> str:
    return "greedy" if cfg.is_greedy else f"T={cfg.temperature:g} top-k={cfg.top_k}"
