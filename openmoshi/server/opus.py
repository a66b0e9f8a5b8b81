"""Streaming Ogg/Opus at 24 kHz mono, as the wire protocol carries it (sphn's OpusStreamWriter/Reader, wrapped).

`OpusEncoder.encode(pcm [N] float32) -> bytes` turns any number of samples into Ogg pages (b"" while it holds
less than a frame); `OpusDecoder.decode(bytes) -> pcm [M] float32` turns any chunking of an Ogg/Opus stream back
into samples (empty until a page is complete). Corrupt or non-Opus input raises `OpusError` (a ValueError) with
the reason; after one, the decoder stays broken (the stream cannot be resynchronised), so a server closes that
connection. Both are plain objects with no threads: one per conversation and direction.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 24_000
FRAME_SAMPLES = 1920  # 80 ms: one model step, one Ogg page per frame from sphn's writer


class OpusError(ValueError):
    """An Ogg/Opus stream that cannot be decoded (or pcm that cannot be encoded); the message says why."""


def _sphn():
    try:
        import sphn
    except ImportError as err:  # pragma: no cover - sphn is a dependency
        raise OpusError(f"Opus needs the sphn package ({err})") from None
    return sphn


def _as_pcm(pcm) -> np.ndarray:
    arr = np.asarray(pcm)
    if arr.ndim != 1:
        raise OpusError(f"pcm must be one channel [N], got shape {list(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise OpusError(f"pcm must be floating point, got {arr.dtype}")
    arr = np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(arr, -1.0, 1.0)


class OpusEncoder:
    """pcm float32 [N] at 24 kHz -> bytes of an Ogg/Opus stream; the first bytes carry the stream headers.

    Samples are cut into 80 ms frames (the writer accepts only Opus frame sizes); a remainder waits for the
    next call, and `flush()` pads it with silence.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, frame_samples: int = FRAME_SAMPLES) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        self._writer = _sphn().OpusStreamWriter(sample_rate)
        self._pending = np.zeros(0, dtype=np.float32)
        self.samples_in = 0

    @property
    def pending_samples(self) -> int:
        return int(self._pending.size)

    def encode(self, pcm) -> bytes:
        """Append samples [N]; the Ogg bytes of every whole frame so far (possibly b"")."""
        arr = _as_pcm(pcm)
        self.samples_in += arr.size
        buf = np.concatenate([self._pending, arr]) if self._pending.size else arr
        n_frames = buf.size // self.frame_samples
        out = []
        for i in range(n_frames):
            frame = np.ascontiguousarray(buf[i * self.frame_samples:(i + 1) * self.frame_samples])
            try:
                out.append(self._writer.append_pcm(frame))
            except Exception as err:  # sphn raises ValueError/TypeError with its own words
                raise OpusError(f"Opus encoding failed: {err}") from None
        self._pending = buf[n_frames * self.frame_samples:].copy()
        return b"".join(out)

    def flush(self) -> bytes:
        """Pad the held remainder (if any) with silence to a whole frame and return its bytes."""
        if not self._pending.size:
            return b""
        pad = np.zeros(self.frame_samples - self._pending.size, dtype=np.float32)
        self.samples_in -= pad.size  # padding is not the caller's audio
        return self.encode(pad)


class OpusDecoder:
    """Bytes of an Ogg/Opus stream, in any chunking -> pcm float32 [M] at 24 kHz (empty until a page completes).

    `max_bytes_pending` bounds what the decoder may hold for an unfinished page: an Ogg page is at most
    27 + 255 + 255 * 255 bytes, so more than that without any output is not an Ogg stream.
    """

    MAX_PAGE_BYTES = 27 + 255 + 255 * 255
    FEED_BYTES = 1024  # per call to sphn: a page holds >= 28 bytes, so at most ~36 pages (~70k samples) a call

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self._reader = _sphn().OpusStreamReader(sample_rate)
        self._error: str | None = None
        self.bytes_in = 0
        self.samples_out = 0
        self._bytes_since_output = 0

    @property
    def broken(self) -> bool:
        return self._error is not None

    def decode(self, data: bytes | bytearray | memoryview) -> np.ndarray:
        """Feed bytes; the samples [M] they completed. OpusError on corrupt, non-Opus or truncated input."""
        if self._error is not None:
            raise OpusError(f"the Opus stream is already broken ({self._error})")
        raw = bytes(data)
        if not raw:
            return np.zeros(0, dtype=np.float32)
        self.bytes_in += len(raw)
        if self.bytes_in == len(raw) and not raw.startswith(b"OggS"[: len(raw)]):
            self._fail(f"not an Ogg stream (starts with {raw[:4].hex()}, expected 4f676753 'OggS')")
        parts = []
        # sphn's reader decodes at most ~100 pages per call ("invalid argument" beyond): feed it small pieces
        for i in range(0, len(raw), self.FEED_BYTES):
            try:
                out = self._reader.append_bytes(raw[i:i + self.FEED_BYTES])
            except BaseException as err:  # ValueError from sphn; a Rust panic is a BaseException
                if isinstance(err, (KeyboardInterrupt, SystemExit)):
                    raise
                self._fail(f"corrupt Ogg/Opus data: {err}")
            if out.size:
                parts.append(np.asarray(out, dtype=np.float32).reshape(-1))
        pcm = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        if pcm.size:
            self._bytes_since_output = 0
        else:
            self._bytes_since_output += len(raw)
            # headers (two pages) may come before any audio, hence the factor 3
            if self._bytes_since_output > 3 * self.MAX_PAGE_BYTES:
                self._fail(f"{self._bytes_since_output} bytes without any audio: not an Ogg/Opus stream")
        self.samples_out += pcm.size
        return pcm

    def _fail(self, reason: str):
        self._error = reason
        raise OpusError(reason)


def encode_all(pcm) -> bytes:
    """A whole Ogg/Opus stream for pcm [N] (the tail padded to a frame)."""
    enc = OpusEncoder()
    return enc.encode(pcm) + enc.flush()


def decode_all(data: bytes) -> np.ndarray:
    """All samples [M] of a whole Ogg/Opus stream."""
    return OpusDecoder().decode(data)
