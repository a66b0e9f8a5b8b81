"""Audio file I/O: read any file soundfile can read as mono float32 at a given rate, write wav.

Reading mixes multi-channel audio down to mono (with a logged notice), scales down a (float) file whose samples
go beyond [-1, 1] so that it peaks at 1 (with a logged notice: such a file was written at the wrong scale, and
clipping it would distort it), and resamples with soxr. Problems with the input (missing, unreadable, empty,
NaN/inf samples) raise `AudioError` with a message naming the file. Writing is atomic (`io_safety`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

SAMPLE_RATE = 24_000  # Mimi's rate

log = logging.getLogger(__name__)


class AudioError(ValueError):
    """An audio file that cannot be used; the message says why."""


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read `path` as mono float32 samples [T] at `sample_rate` Hz (resampled if needed)."""
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"expected an audio file, got a directory: {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"cannot read {path} as audio ({e})") from e
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{path} contains no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path} contains NaN or infinite samples")
    if data.shape[1] > 1:
        log.warning("%s has %d channels: mixing them down to mono", path, data.shape[1])
    mono = data.mean(axis=1, dtype=np.float32)
    peak = float(np.abs(mono).max())
    if peak > 1.0:
        log.warning("%s peaks at %.4g, beyond the [-1, 1] of audio samples: scaling it down by that factor", path,
                    peak)
        mono /= peak
    return resample(mono, rate, sample_rate)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono float32 audio [T] (soxr, high quality). Identity when the rates match."""
    if from_rate <= 0 or to_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate:
        return np.ascontiguousarray(audio, dtype=np.float32)
    import soxr

    out = soxr.resample(np.asarray(audio, dtype=np.float32), from_rate, to_rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, *, channels_last: bool = False
              ) -> None:
    """Write audio as 16-bit PCM wav, clipping to [-1, 1], atomically (the folder is created if needed).

    Mono [T] or [1, T]; with `channels_last`, [T, C] (C channels, e.g. a stereo conversation).
    """
    import soundfile as sf

    from .io_safety import atomic_output

    audio = np.asarray(audio, dtype=np.float32)
    if not channels_last and audio.ndim == 2 and audio.shape[0] == 1:
        audio = audio[0]
    if (audio.ndim != 2) if channels_last else (audio.ndim != 1):
        raise AudioError(f"write_wav expects {'[T, C]' if channels_last else 'mono audio [T]'}, got {audio.shape}")
    with atomic_output(path) as f:
        sf.write(f, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def example_recording() -> Path:
    """The bundled example: about 6 s of synthetic English speech, 24 kHz mono 16-bit wav (docs/codec.md)."""
    return Path(__file__).with_name("assets") / "example.wav"
