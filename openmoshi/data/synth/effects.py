"""Ways the user's audio is varied after synthesis: speed and pitch (together, like a tape played faster), loudness,
a room (a simple synthetic reverb) and background noise. All take a numpy Generator, so a conversation's seed
fixes them. Audio is mono float32 [T] at 24 kHz throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openmoshi.audio import SAMPLE_RATE, resample


@dataclass(frozen=True)
class Channel:
    """The user's sound for one conversation: drawn once (`draw_channel`), applied to every utterance."""

    tape: float  # > 1: higher and faster (pitch and speed scale together)
    gain_db: float  # loudness of the speech (peak level, dB re full scale)
    rt60: float  # room: reverberation time in s (0 = none)
    wet: float  # room: share of reverberated sound
    noise_db: float | None  # noise level (dB re full scale RMS), None for none
    noise_colour: float  # spectral slope: 0 white, 1 pink, 2 brown


def draw_channel(rng: np.random.Generator) -> Channel:
    rt60 = float(rng.uniform(0.15, 0.8)) if rng.random() < 0.6 else 0.0
    noisy = rng.random() < 0.8
    return Channel(
        tape=float(np.exp(rng.uniform(np.log(0.9), np.log(1.12)))),
        gain_db=float(rng.uniform(-20.0, -3.0)),
        rt60=rt60,
        wet=float(rng.uniform(0.1, 0.5)) if rt60 else 0.0,
        noise_db=float(rng.uniform(-65.0, -35.0)) if noisy else None,
        noise_colour=float(rng.choice([0.0, 1.0, 2.0])),
    )


def tape(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play `audio` `factor` times faster: duration / factor, pitch * factor (word times scale by 1 / factor)."""
    if abs(factor - 1.0) < 1e-6:
        return audio
    return resample(audio, int(round(SAMPLE_RATE * factor)), SAMPLE_RATE)


def set_peak(audio: np.ndarray, peak_db: float) -> np.ndarray:
    peak = float(np.abs(audio).max())
    if peak < 1e-9:
        return audio
    return (audio * (10 ** (peak_db / 20) / peak)).astype(np.float32)


def room_response(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """An impulse response: a few early reflections, then exponentially decaying noise (-60 dB at rt60)."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(0.005 * SAMPLE_RATE)] = 0.0  # the tail starts after the direct sound
    for _ in range(4):
        tail[int(rng.uniform(0.003, 0.03) * SAMPLE_RATE)] += rng.uniform(0.3, 0.7) * rng.choice([-1, 1])
    return (tail / np.sqrt(np.sum(tail**2))).astype(np.float32)


def add_room(audio: np.ndarray, ir: np.ndarray, wet: float) -> np.ndarray:
    """Dry/wet mix of `audio` convolved with `ir` (same length as `audio`: the tail past the end is dropped by
    the caller's timeline, which leaves room after every utterance)."""
    n = len(audio) + len(ir) - 1
    size = 1 << (n - 1).bit_length()
    wet_sig = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(ir, size), size)[:n]
    rms_dry = np.sqrt(np.mean(audio**2) + 1e-12)
    rms_wet = np.sqrt(np.mean(wet_sig[: len(audio)] ** 2) + 1e-12)
    out = wet * wet_sig * (rms_dry / rms_wet)
    out[: len(audio)] += (1 - wet) * audio
    return out.astype(np.float32)


def noise(rng: np.random.Generator, n: int, level_db: float | None, colour: float) -> np.ndarray:
    """Noise [n] with power spectrum ~ 1 / f^colour, at `level_db` RMS re full scale."""
    if n == 0 or level_db is None:
        return np.zeros(n, np.float32)
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    sig = np.fft.irfft(spectrum / f ** (colour / 2), n)
    sig /= np.sqrt(np.mean(sig**2)) + 1e-12
    return (sig * 10 ** (level_db / 20)).astype(np.float32)
