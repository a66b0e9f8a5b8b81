"""Audio I/O: reading any rate / channel count as 24 kHz mono, clear errors, wav round trip."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from openmoshi.audio import AudioError, example_recording, read_audio, resample, write_wav


def _tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_wav_round_trip(tmp_path: Path) -> None:
    x = _tone(24000, 0.5)
    write_wav(tmp_path / "a.wav", x)
    y = read_audio(tmp_path / "a.wav")
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() < 1e-4  # 16-bit quantisation


def test_write_clips_and_accepts_1xT(tmp_path: Path) -> None:
    write_wav(tmp_path / "c.wav", np.array([[2.0, -3.0, 0.25]], dtype=np.float32))
    y, rate = sf.read(tmp_path / "c.wav", dtype="float32")
    assert rate == 24000
    np.testing.assert_allclose(y, [32767 / 32768, -1.0, 0.25], atol=1e-4)


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg")])
def test_resamples_any_rate_and_format(tmp_path: Path, fmt: str, ext: str) -> None:
    x = _tone(16000, 1.0)
    sf.write(tmp_path / f"a.{ext}", x, 16000, format=fmt)
    y = read_audio(tmp_path / f"a.{ext}")
    assert abs(len(y) - 24000) <= 1
    # Still a 440 Hz tone: the spectrum peaks there.
    spectrum = np.abs(np.fft.rfft(y[:24000]))
    assert abs(np.argmax(spectrum) - 440) <= 2  # 1 Hz bins over 24000 samples at 24 kHz


def test_resample_identity_and_lengths() -> None:
    x = _tone(24000, 0.1)
    np.testing.assert_array_equal(resample(x, 24000, 24000), x)
    assert len(resample(x, 24000, 48000)) == 2 * len(x)
    with pytest.raises(AudioError, match="positive"):
        resample(x, 0, 24000)


def test_stereo_mixed_down_with_notice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    left, right = _tone(24000, 0.2), np.zeros(4800, dtype=np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 24000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING):
        y = read_audio(tmp_path / "s.wav")
    assert "mixing them down to mono" in caplog.text
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not found"):
        read_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="directory"):
        read_audio(tmp_path)
    (tmp_path / "junk.wav").write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="cannot read"):
        read_audio(tmp_path / "junk.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 24000)
    with pytest.raises(AudioError, match="no audio samples"):
        read_audio(tmp_path / "empty.wav")
    bad = _tone(24000, 0.1)
    bad[10] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 24000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        read_audio(tmp_path / "nan.wav")
    with pytest.raises(AudioError, match="mono"):
        write_wav(tmp_path / "x.wav", np.zeros((2, 10), dtype=np.float32))


def test_bundled_example_is_short_24k_mono_speech() -> None:
    path = example_recording()
    info = sf.info(path)
    assert info.samplerate == 24000 and info.channels == 1
    assert 3.0 < info.duration < 10.0
    assert path.stat().st_size < 300_000
    y = read_audio(path)
    assert 0.1 < np.abs(y).max() <= 1.0


def test_loud_float_input_is_scaled_down_with_a_notice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x = _tone(24000, 0.1)
    sf.write(tmp_path / "loud.wav", 200 * x, 24000, subtype="FLOAT")  # peaks at 100: the wrong scale
    with caplog.at_level(logging.WARNING):
        y = read_audio(tmp_path / "loud.wav")
    assert "peaks at 100" in caplog.text and "beyond the [-1, 1]" in caplog.text
    np.testing.assert_allclose(y, x / np.abs(x).max(), atol=1e-6)  # the same waveform, not clipped
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read_audio(_write(tmp_path / "ok.wav", x))
    assert "peaks" not in caplog.text  # audio within [-1, 1] is left alone


def _write(path: Path, x: np.ndarray) -> Path:
    sf.write(path, x, 24000, subtype="FLOAT")
    return path


def test_write_wav_is_atomic_and_writes_channels_last(tmp_path: Path) -> None:
    target = tmp_path / "keep.wav"
    write_wav(target, _tone(24000, 0.05))
    before = target.read_bytes()
    with pytest.raises(AudioError):
        write_wav(target, np.zeros((2, 3, 4), dtype=np.float32))  # refused before anything is written
    assert target.read_bytes() == before
    stereo = np.stack([_tone(24000, 0.05), -_tone(24000, 0.05)], axis=1)
    write_wav(tmp_path / "s" / "st.wav", stereo, channels_last=True)
    y, rate = sf.read(tmp_path / "s" / "st.wav", dtype="float32")
    assert rate == 24000 and y.shape == stereo.shape and np.abs(y - stereo).max() < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav", "s"]
