"""Codec metrics on hand-made signals: bitrate, SI-SDR at a known SNR, PESQ/STOI order, WER, mel distance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openmoshi.eval import codec_metrics as cm

SR = 24_000


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Harmonic bursts with a moving pitch (PESQ and STOI need speech-like energy), float32 [T]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voice = sum(np.sin(h * phase) / h for h in range(1, 12))
    envelope = (np.sin(2 * np.pi * 2.5 * t) > -0.2).astype(float) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (0.2 * voice * envelope + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


def test_bitrate_of_mimi() -> None:
    assert cm.bitrate(8, 2048, 12.5) == 1100.0
    assert cm.bitrate(32, 2048, 12.5) == 4400.0


def test_si_sdr_known_snr_and_scale_invariance() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(48_000)
    noise = rng.standard_normal(48_000)
    noise -= noise.mean()
    noise -= (noise @ (x - x.mean())) / ((x - x.mean()) @ (x - x.mean())) * (x - x.mean())  # orthogonal to x
    noise *= np.linalg.norm(x - x.mean()) / np.linalg.norm(noise) / 10  # 20 dB below
    assert cm.si_sdr(x, x + noise) == pytest.approx(20.0, abs=1e-6)
    assert cm.si_sdr(x, 3 * (x + noise)) == pytest.approx(20.0, abs=1e-6)  # gain does not count
    assert cm.si_sdr(x, x) > 100


def test_pesq_and_stoi_rank_degradations() -> None:
    x = _speechlike()
    rng = np.random.default_rng(2)
    light = x + 0.005 * rng.standard_normal(len(x)).astype(np.float32)
    heavy = x + 0.1 * rng.standard_normal(len(x)).astype(np.float32)
    p_same, p_light, p_heavy = (cm.pesq_wb(x, y, SR) for y in (x, light, heavy))
    assert p_same > 4.0 and p_same > p_light > p_heavy
    s_same, s_heavy = cm.stoi(x, x, SR), cm.stoi(x, heavy, SR)
    assert s_same == pytest.approx(1.0, abs=1e-3) and s_heavy < s_same
    assert math.isnan(cm.pesq_wb(np.zeros(SR, np.float32), np.zeros(SR, np.float32), SR))  # nothing to score


def test_mel_distance_zero_only_for_identical() -> None:
    x = _speechlike(0.5)
    assert cm.mel_distance(x, x, SR) == 0.0
    assert cm.mel_distance(x, np.concatenate([x, np.zeros(100, np.float32)]), SR) == 0.0  # padding is cut
    assert cm.mel_distance(x, 0.5 * x, SR) > 0.1


def test_word_error_rate() -> None:
    assert cm.normalize_words("Hello, World! It's  a test-case.") == ["hello", "world", "it's", "a", "test", "case"]
    assert cm.word_error_rate("the quick brown fox", "The quick brown fox.") == 0.0
    assert cm.word_errors("the quick brown fox", "the quack brown") == (2, 4)  # one substitution, one deletion
    assert cm.word_error_rate("a b", "x a b y z") == 1.5  # insertions count: WER can exceed 1
    assert math.isnan(cm.word_error_rate("", "anything"))
