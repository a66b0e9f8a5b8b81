"""Helpers for the server tests (and the client/web tests beside them): a tiny model with 80 ms frames, a
server on a real localhost port, and a small websocket client speaking the protocol.

The tiny model (`build_server_repo`, re-exported from openmoshi.testing.server_model) is moshi-free, with
Kyutai's 1920-sample frames: one Opus page of the wire protocol is one model step.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from openmoshi.server import protocol
from openmoshi.server.opus import OpusDecoder, OpusEncoder
from openmoshi.testing.server_model import FAST_MIMI, build_server_repo  # noqa: F401  (re-exported)


def load_server_models(folder: Path):
    from openmoshi.inference.models import load_models, resolve_model_files

    return load_models(resolve_model_files(str(folder)), "cpu")


def user_audio(frames: int, seed: int = 0, frame_size: int = 1920) -> np.ndarray:
    """A float32 [frames * frame_size] signal: a tone with noise (varied codes)."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * frame_size) / 24_000
    return (0.2 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


class Result:
    """What a client got: messages in order (kind, payload), decoded audio, text, the error (if any)."""

    def __init__(self) -> None:
        self.kinds: list[protocol.Kind] = []
        self.text: list[str] = []
        self.pcm: list[np.ndarray] = []
        self.error: str | None = None
        self.metadata: dict | None = None
        self.close_code: int | None = None

    @property
    def samples(self) -> int:
        return sum(p.size for p in self.pcm)


async def talk(session, url: str, pcm: np.ndarray | None, expect_samples: int | None = None, timeout: float = 60.0,
               chunk: int = 1920, headers: dict | None = None) -> Result:
    """Connect, wait for the handshake, send `pcm` as Opus (all at once), read until `expect_samples` samples of
    Moshi's audio came back (or the server closed), then close. Returns what was received."""
    res = Result()
    decoder = OpusDecoder()
    async with session.ws_connect(url, max_msg_size=0, headers=headers) as ws:

        async def receive_until(done) -> None:
            while not done():
                msg = await ws.receive()
                if msg.type != 2:  # aiohttp.WSMsgType.BINARY
                    res.close_code = ws.close_code
                    return
                m = protocol.decode(msg.data)
                res.kinds.append(m.kind)
                if m.kind is protocol.Kind.AUDIO:
                    res.pcm.append(decoder.decode(m.data))
                elif m.kind is protocol.Kind.TEXT:
                    res.text.append(m.data)
                elif m.kind is protocol.Kind.ERROR:
                    res.error = m.data
                elif m.kind is protocol.Kind.METADATA:
                    res.metadata = m.data

        await asyncio.wait_for(receive_until(lambda: bool(res.kinds) or res.close_code is not None), timeout)
        if res.kinds[:1] != [protocol.Kind.HANDSHAKE] or pcm is None:
            return res
        enc = OpusEncoder()
        for i in range(0, pcm.size, chunk):
            data = enc.encode(pcm[i:i + chunk])
            if data:
                await ws.send_bytes(protocol.audio(data))
        if expect_samples:
            await asyncio.wait_for(receive_until(lambda: res.samples >= expect_samples or res.error is not None),
                                   timeout)
    return res


# ---- a raw websocket client: for clients that misbehave below what aiohttp's client allows -------------------
def raw_ws_connect(host: str, port: int, path: str = "/api/chat", rcvbuf: int | None = None):
    """A blocking socket after a websocket upgrade (the 101 response read); `rcvbuf` shrinks its receive buffer
    (set before connecting, so the TCP window stays small)."""
    import base64
    import os
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing past the headers is consumed
        if not chunk:
            raise ConnectionError("closed during the upgrade")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.decode(errors="replace"))
    return sock


def ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One masked client frame (FIN set)."""
    import os
    import struct

    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    body = np.frombuffer(payload, dtype=np.uint8) ^ np.resize(np.frombuffer(mask, dtype=np.uint8), n)
    return head + mask + body.tobytes()


def settle(srv, timeout: float = 10.0) -> None:
    """Wait until every websocket handler of a BackgroundServer finished and the engine applied every leave."""
    import time

    from openmoshi.server.app import STATE

    deadline = time.monotonic() + timeout
    while srv.app[STATE]["connections"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not srv.app[STATE]["connections"], "websocket handlers still running"
    assert srv.engine.wait_settled(max(0.1, deadline - time.monotonic()))
