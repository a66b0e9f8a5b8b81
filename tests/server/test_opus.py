"""openmoshi/server/opus.py: streaming Ogg/Opus round trips, any chunking, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from openmoshi.server.opus import FRAME_SAMPLES, OpusDecoder, OpusEncoder, OpusError, decode_all, encode_all


def _tone(n: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(n) / 24_000
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _stream(frames: int = 10) -> bytes:
    return encode_all(_tone(frames * FRAME_SAMPLES))


def test_round_trip_keeps_the_signal():
    pcm = _tone(10 * FRAME_SAMPLES)
    out = decode_all(encode_all(pcm))
    assert out.dtype == np.float32 and out.shape == pcm.shape
    # Opus has a few ms of algorithmic delay: compare by best lag correlation
    lags = range(0, 400)
    best = max(float(np.corrcoef(pcm[: -400], out[lag: lag + pcm.size - 400])[0, 1]) for lag in lags)
    assert best > 0.9


def test_encoder_buffers_partial_frames_and_flush_pads():
    enc = OpusEncoder()
    assert enc.encode(_tone(1000)) == b""
    assert enc.pending_samples == 1000
    first = enc.encode(_tone(1000))  # 2000 >= one frame
    assert first.startswith(b"OggS") and enc.pending_samples == 80
    tail = enc.flush()
    assert tail and enc.pending_samples == 0
    assert enc.flush() == b""
    assert decode_all(first + tail).size == 2 * FRAME_SAMPLES


@pytest.mark.parametrize("chunk", [1, 7, 300, 100_000])
def test_decoder_accepts_any_chunking(chunk):
    data = _stream(6)
    dec = OpusDecoder()
    parts = [dec.decode(data[i: i + chunk]) for i in range(0, len(data), chunk)]
    assert sum(p.size for p in parts) == 6 * FRAME_SAMPLES
    assert all(p.dtype == np.float32 and p.ndim == 1 for p in parts)


def test_decoder_empty_input_and_incomplete_page_give_no_samples():
    dec = OpusDecoder()
    assert dec.decode(b"").size == 0
    assert dec.decode(_stream(2)[:20]).size == 0


def test_encoder_sanitises_and_validates_pcm():
    enc = OpusEncoder()
    bad = _tone(FRAME_SAMPLES)
    bad[10] = np.nan
    bad[11] = 5.0
    assert enc.encode(bad).startswith(b"OggS")
    with pytest.raises(OpusError, match="one channel"):
        enc.encode(np.zeros((2, 10), np.float32))
    with pytest.raises(OpusError, match="floating point"):
        enc.encode(np.zeros(10, np.int16))


def test_random_bytes_are_refused_and_the_decoder_stays_broken():
    dec = OpusDecoder()
    with pytest.raises(OpusError, match="not an Ogg stream"):
        dec.decode(b"\x13\x37garbage")
    assert dec.broken
    with pytest.raises(OpusError, match="already broken"):
        dec.decode(_stream(1))


def test_truncated_page_followed_by_more_is_an_error():
    data = _stream(6)
    second = data.find(b"OggS", 1)
    third = data.find(b"OggS", second + 1)
    dec = OpusDecoder()
    with pytest.raises(OpusError, match="corrupt"):
        dec.decode(data[: third - 5] + data[third:])


def test_non_opus_ogg_is_an_error():
    data = _stream(3).replace(b"OpusHead", b"VorbHead", 1)
    with pytest.raises(OpusError):
        OpusDecoder().decode(data)


def test_fuzzed_streams_raise_only_opus_error():
    rng = np.random.default_rng(0)
    data = bytearray(_stream(8))
    outcomes = {"ok": 0, "error": 0}
    for _ in range(200):
        s = bytearray(data)
        for pos in rng.integers(0, len(s), size=int(rng.integers(1, 20))):
            s[int(pos)] = int(rng.integers(0, 256))
        dec = OpusDecoder()
        try:
            for i in range(0, len(s), 500):
                dec.decode(bytes(s[i: i + 500]))
            outcomes["ok"] += 1
        except OpusError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0  # corruption is detected at least sometimes, never with another exception


def test_bytes_without_audio_are_bounded():
    dec = OpusDecoder()
    page_start = b"OggS" + bytes(22) + b"\xff" + b"\xff" * 255  # a header promising a huge page
    dec.decode(page_start)
    with pytest.raises(OpusError):
        for _ in range(400):
            dec.decode(bytes(1000))


def test_a_minute_in_one_call():
    """sphn's reader alone refuses ~200 pages in one call; the decoder feeds it in pieces."""
    pcm = _tone(750 * FRAME_SAMPLES)
    assert decode_all(encode_all(pcm)).size == pcm.size
