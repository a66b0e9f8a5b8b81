"""The wire protocol of `/api/chat`: Kyutai's, message for message, so their clients work with our server.

Every websocket message is binary: one kind byte, then the payload. The kinds (Kyutai's web client and Rust
server use all eight; their client throws on any other byte):

| kind | byte | payload |
|---|---|---|
| handshake | 0x00 | empty (server, as Kyutai's Python server), or a version byte and a model byte, both 0 |
| audio | 0x01 | a chunk of an Ogg/Opus stream, 24 kHz mono, both directions (the first chunk carries the headers) |
| text | 0x02 | UTF-8 of one text piece (the word-boundary mark already a space), server to client |
| control | 0x03 | one byte: 0 start, 1 end of turn, 2 pause, 3 restart |
| metadata | 0x04 | UTF-8 JSON object |
| error | 0x05 | UTF-8 reason; the server sends it before closing a connection |
| ping | 0x06 | empty |
| coloured text | 0x07 | a colour byte, then UTF-8 |

`decode` validates a message and raises `ProtocolError` naming what is wrong; `encode` is its inverse. The
server, the clients, the tests and docs/protocol.md all follow this module. No torch, no I/O.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE_BYTES = 1 << 20  # an 80 ms Opus chunk is ~300-450 bytes; anything near 1 MiB is not audio


class ProtocolError(ValueError):
    """A message or a connection parameter that does not follow the protocol (the reason is for the peer)."""


class Kind(enum.IntEnum):
    HANDSHAKE = 0x00
    AUDIO = 0x01
    TEXT = 0x02
    CONTROL = 0x03
    METADATA = 0x04
    ERROR = 0x05
    PING = 0x06
    COLORED_TEXT = 0x07


class Control(enum.IntEnum):
    START = 0
    END_TURN = 1
    PAUSE = 2
    RESTART = 3


@dataclass(frozen=True)
class Message:
    """One decoded message. `data`: audio bytes, text/error str, Control, metadata dict, (colour, str) or None."""

    kind: Kind
    data: Any = None


def _utf8(payload: bytes, what: str) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError(f"{what} message is not valid UTF-8 (byte {err.start})") from None


def decode(message: bytes | bytearray | memoryview) -> Message:
    """Parse one binary websocket message; ProtocolError for anything else."""
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"messages are binary, got {type(message).__name__}")
    raw = bytes(message)
    if not raw:
        raise ProtocolError("empty message (no kind byte)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        kind = Kind(raw[0])
    except ValueError:
        raise ProtocolError(f"unknown message kind 0x{raw[0]:02x}") from None
    payload = raw[1:]
    if kind is Kind.HANDSHAKE:
        if payload not in (b"", b"\x00\x00"):
            raise ProtocolError(f"handshake payload must be empty or version 0 and model 0, got {payload.hex()}")
        return Message(kind)
    if kind is Kind.AUDIO:
        if not payload:
            raise ProtocolError("audio message without data")
        return Message(kind, payload)
    if kind in (Kind.TEXT, Kind.ERROR):
        return Message(kind, _utf8(payload, kind.name.lower()))
    if kind is Kind.CONTROL:
        if len(payload) != 1:
            raise ProtocolError(f"control message must hold one byte, got {len(payload)}")
        try:
            return Message(kind, Control(payload[0]))
        except ValueError:
            raise ProtocolError(f"unknown control action {payload[0]}") from None
    if kind is Kind.METADATA:
        try:
            meta = json.loads(_utf8(payload, "metadata"))
        except json.JSONDecodeError as err:
            raise ProtocolError(f"metadata is not JSON: {err.msg} at {err.pos}") from None
        if not isinstance(meta, dict):
            raise ProtocolError("metadata must be a JSON object")
        return Message(kind, meta)
    if kind is Kind.PING:
        if payload:
            raise ProtocolError("ping carries no payload")
        return Message(kind)
    if not payload:  # COLORED_TEXT
        raise ProtocolError("coloured text message without a colour byte")
    return Message(kind, (payload[0], _utf8(payload[1:], "coloured text")))


def encode(msg: Message) -> bytes:
    """The bytes of `msg` (validated as `decode` would)."""
    kind, data = Kind(msg.kind), msg.data
    if kind in (Kind.HANDSHAKE, Kind.PING):
        payload = b""
    elif kind is Kind.AUDIO:
        payload = bytes(data)
    elif kind in (Kind.TEXT, Kind.ERROR):
        payload = str(data).encode("utf-8")
    elif kind is Kind.CONTROL:
        payload = bytes([Control(data)])
    elif kind is Kind.METADATA:
        payload = json.dumps(dict(data), separators=(",", ":")).encode("utf-8")
    else:
        colour, text = data
        payload = bytes([colour]) + str(text).encode("utf-8")
    out = bytes([kind]) + payload
    decode(out)  # what we send must be what a peer accepts
    return out


def handshake() -> bytes:
    return encode(Message(Kind.HANDSHAKE))


def audio(chunk: bytes) -> bytes:
    return encode(Message(Kind.AUDIO, chunk))


def text(piece: str) -> bytes:
    return encode(Message(Kind.TEXT, piece))


def error(reason: str) -> bytes:
    return encode(Message(Kind.ERROR, reason))


# ---- the websocket URL's query: Kyutai's web client puts its settings there -----------------------------------
@dataclass(frozen=True)
class SessionParams:
    """Per-conversation settings from the URL query (None: the server's default)."""

    text_temperature: float | None = None
    text_topk: int | None = None
    audio_temperature: float | None = None
    audio_topk: int | None = None
    text_seed: int | None = None
    audio_seed: int | None = None


_FLOATS = ("text_temperature", "audio_temperature")
_INTS = ("text_topk", "audio_topk")
_SEEDS = ("text_seed", "audio_seed")
def parse_query(query: Mapping[str, str]) -> tuple[SessionParams, list[str]]:
    """(settings, names of the parameters accepted but ignored). ProtocolError names a malformed value.

    Parameters other than the sampling settings and seeds (Kyutai's client also sends pad_mult,
    repetition_penalty, repetition_penalty_context, ...) are accepted, never an error, and reported as ignored.
    """
    values: dict[str, Any] = {}
    ignored = []
    for name, raw in query.items():
        if name in _FLOATS:
            try:
                value = float(raw)
            except ValueError:
                raise ProtocolError(f"{name} must be a number, got {raw!r}") from None
            if not math.isfinite(value) or value < 0:
                raise ProtocolError(f"{name} must be a finite number >= 0, got {raw!r}")
            values[name] = value
        elif name in _INTS or name in _SEEDS:
            try:
                value = int(raw)
            except ValueError:
                raise ProtocolError(f"{name} must be an integer, got {raw!r}") from None
            limit = (1 << 64) if name in _SEEDS else (1 << 31)
            if not 0 <= value < limit:
                raise ProtocolError(f"{name} must be in 0..{limit - 1}, got {raw!r}")
            values[name] = value
        else:
            ignored.append(name)
    return SessionParams(**values), sorted(ignored)
