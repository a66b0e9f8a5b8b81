"""Codec quality metrics on one clip: bitrate, mel distance, SI-SDR, PESQ (wide band), STOI, word error rate.

Audio is mono float32 numpy [T] at the codec's rate (24 kHz); the reference and the estimate are cut to the
shorter of the two (a codec pads to whole frames). PESQ and STOI come from the `pesq` and `pystoi` packages
(extra `openmoshi[eval]`); PESQ works at 16 kHz (wide band), so both signals are resampled; a clip PESQ cannot
score (no speech found, too short) gives NaN rather than an error, and the report says how many clips counted.
"""

from __future__ import annotations

import math
import re
import unicodedata

import numpy as np

INSTALL_HINT = "install the evaluation extra: pip install 'openmoshi[eval]'"


def bitrate(num_codebooks: int, codebook_size: int, frame_rate: float) -> float:
    """Bits per second of K codebooks of `codebook_size` entries at `frame_rate` (Mimi, K = 8: 1100 bps)."""
    return num_codebooks * math.log2(codebook_size) * frame_rate


def _pair(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(ref), len(est))
    if n == 0:
        raise ValueError("empty audio")
    return np.asarray(ref[:n], dtype=np.float64), np.asarray(est[:n], dtype=np.float64)


def si_sdr(ref: np.ndarray, est: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (zero-mean signals; the estimate's gain does not count)."""
    r, e = _pair(ref, est)
    r, e = r - r.mean(), e - e.mean()
    target = (e @ r) / (r @ r + eps) * r
    noise = e - target
    return float(10 * np.log10((target @ target + eps) / (noise @ noise + eps)))


def mel_distance(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """The training's multi-scale log-mel L1 distance (`train.codec_losses.MultiScaleMelLoss`); 0 = identical."""
    import torch

    from ..train.codec_losses import MultiScaleMelLoss

    r, e = _pair(ref, est)
    with torch.no_grad():
        loss = MultiScaleMelLoss(sample_rate)(torch.from_numpy(e).float()[None, None],
                                              torch.from_numpy(r).float()[None, None])
    return float(loss)


def pesq_wb(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (MOS-LQO, about 1.0 to 4.6) at 16 kHz; NaN when PESQ finds no speech to score."""
    try:
        from pesq import PesqError, pesq
    except ImportError:
        raise RuntimeError(f"PESQ needs the package pesq; {INSTALL_HINT}") from None
    from ..audio import resample

    r, e = _pair(ref, est)
    if not np.abs(r).max() > 0 or not np.abs(e).max() > 0:  # silence: nothing to score (pesq would divide by 0)
        return float("nan")
    r16 = resample(r.astype(np.float32), sample_rate, 16_000)
    e16 = resample(e.astype(np.float32), sample_rate, 16_000)
    try:
        return float(pesq(16_000, r16, e16, "wb"))
    except (PesqError, ValueError):  # "no utterances detected", a clip too short
        return float("nan")


def stoi(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility (0..1), pystoi's classic STOI."""
    try:
        from pystoi import stoi as _stoi
    except ImportError:
        raise RuntimeError(f"STOI needs the package pystoi; {INSTALL_HINT}") from None
    import warnings

    r, e = _pair(ref, est)
    with warnings.catch_warnings():  # pystoi warns (and returns ~0) on clips shorter than its 30-frame window
        warnings.simplefilter("ignore")
        return float(_stoi(r, e, sample_rate, extended=False))


def normalize_words(text: str) -> list[str]:
    """Lower case, accents and punctuation removed (apostrophes inside words kept), split on spaces."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[^\w\s']|(?<!\w)'|'(?!\w)", " ", text.replace("-", " "))
    return text.split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edits, reference words): the word-level Levenshtein distance after `normalize_words`."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, rw in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, hw in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1], len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Edits / reference words (can exceed 1); NaN for an empty reference."""
    edits, words = word_errors(reference, hypothesis)
    return edits / words if words else float("nan")
