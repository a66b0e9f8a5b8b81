"""Moshi's audio as timed words, for the audio judge of `openmoshi eval dialogue`.

The recogniser is the codec report's (`eval.asr.WhisperASR`: Whisper tiny.en, offline, int8 on the CPU), asked
here for word timestamps so the reply windows, talk-over and delays are judged on what Moshi SAID as on what it
wrote. Greedy decoding, no conditioning on earlier text (a hallucinated phrase does not repeat).

Whisper over a whole conversation's Moshi channel (mostly silence) misplaces words by seconds after long silences
and drops short replies ("No.", "September." in our held-out set). So the channel is first cut into speech
regions by its energy (`speech_regions`), the regions are joined with `JOIN_S` of silence between them (a
compact recording of what Moshi said), transcribed once, and each word's time is mapped back to the region it
overlaps most. Whisper's word times are off by 0.1-0.3 s either way: a region's first word is made to start where
the region's sound starts, and each start is moved to the first loud 10 ms frame inside the word.
"""

from __future__ import annotations

import numpy as np

from ..inference.transcript import Word
from .asr import WhisperASR

HOP_S = 0.01  # energy frames
REL_DB = 35.0  # a frame is speech when its level is within this of the loudest frames' (95th percentile)
FLOOR_DB = -60.0  # ... and above this (dBFS)
MIN_GAP_S = 0.4  # shorter silences do not split a region
PAD_S = 0.15  # kept around each region
JOIN_S = 0.6  # silence between regions in the compact recording


def frame_levels(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono [T] -> level in dBFS of each HOP_S frame (20 ms windows) [n]."""
    hop = max(1, int(round(HOP_S * sample_rate)))
    n = max(1, -(-audio.shape[0] // hop))
    padded = np.zeros((n + 1) * hop, dtype=np.float64)
    padded[: audio.shape[0]] = audio
    power = np.square(padded).reshape(n + 1, hop).mean(axis=1)
    power = (power[:-1] + power[1:]) / 2  # 20 ms windows, 10 ms apart
    return 10 * np.log10(power + 1e-12)


def speech_mask(levels: np.ndarray) -> np.ndarray:
    """[n] bool: frames loud enough to be speech (relative to the recording's loud frames, and absolutely)."""
    if levels.size == 0:
        return np.zeros(0, dtype=bool)
    return levels > max(float(np.percentile(levels, 95)) - REL_DB, FLOOR_DB)


def speech_regions(audio: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """[(start_s, end_s)]: where the mono `audio` [T] has speech, padded by PAD_S, gaps under MIN_GAP_S closed."""
    mask = speech_mask(frame_levels(audio, sample_rate))
    duration = audio.shape[0] / sample_rate
    regions: list[list[float]] = []
    for i in np.flatnonzero(mask):
        t = float(i) * HOP_S
        if regions and t - regions[-1][1] <= MIN_GAP_S:
            regions[-1][1] = t + HOP_S
        else:
            regions.append([t, t + HOP_S])
    out: list[tuple[float, float]] = []
    for a, b in regions:
        a, b = max(0.0, a - PAD_S), min(duration, b + PAD_S)
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _place(start: float, end: float, spans: list[tuple[float, float, float]]) -> tuple[int, float, float]:
    """A word's compact times -> (region index, original start, end): the region it overlaps most (else the
    nearest one); the word is clipped to the region."""
    def score(span: tuple[float, float, float]) -> float:
        overlap = min(end, span[1]) - max(start, span[0])
        return overlap if overlap > 0 else -min(abs(start - span[1]), abs(end - span[0]))

    k = max(range(len(spans)), key=lambda i: score(spans[i]))
    cs, ce, orig = spans[k]
    start, end = min(max(start, cs), ce), max(min(end, ce), cs)
    return k, start - cs + orig, max(start, end) - cs + orig


def transcribe_words(asr: WhisperASR, audio: np.ndarray, sample_rate: int) -> list[Word]:
    """Mono float32 audio [T] at `sample_rate` -> words with start/end in seconds (from the audio's start)."""
    from ..audio import resample

    audio = np.asarray(audio, dtype=np.float32)
    regions = speech_regions(audio, sample_rate) if audio.size else []
    if not regions:
        return []
    pieces, spans, t = [], [], 0.0  # spans: (compact start, compact end, original start) of each region
    gap = np.zeros(int(JOIN_S * sample_rate), dtype=np.float32)
    for a, b in regions:
        piece = audio[int(a * sample_rate): int(b * sample_rate)]
        spans.append((t, t + piece.shape[0] / sample_rate, a))
        pieces += [piece, gap]
        t += (piece.shape[0] + gap.shape[0]) / sample_rate
    compact = resample(np.concatenate(pieces), sample_rate, 16_000)
    segments, _ = asr.model.transcribe(compact, language="en", beam_size=1, word_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False)
    mask = speech_mask(frame_levels(audio, sample_rate))
    words, seen = [], set()
    for segment in segments:
        for w in segment.words or []:
            text = w.word.strip()
            if not text:
                continue
            k, start, end = _place(float(w.start), max(float(w.end), float(w.start)), spans)
            if k not in seen:  # a region's first word starts where its sound does (Whisper's is often late)
                seen.add(k)
                onset = regions[k][0] + (PAD_S if regions[k][0] > 0 else 0.0)
                start = min(start, onset) if onset < end else start
            loud = np.flatnonzero(mask[int(start / HOP_S): max(int(start / HOP_S) + 1, int(end / HOP_S))])
            if loud.size:  # Whisper's start is often in the silence before the word
                start = int(start / HOP_S) * HOP_S + float(loud[0]) * HOP_S
            words.append(Word(text, round(start, 3), round(max(start, end), 3)))
    return words
