"""Moshi's inner monologue: aligned words laid on the codec's frame grid (12.5 Hz) with PAD and EPAD.

The rule (FACTS.md, "Inner monologue"; docs/data.md has a worked example):
- a word starting at s seconds begins at frame floor(s * frame_rate); its SentencePiece tokens fill that frame
  and the following ones, one token per frame;
- a word that starts while the previous word's tokens are still being written cuts the rest of the previous
  word (two words starting in the same frame: the later one is kept whole, the earlier one is cut to nothing);
- EPAD ("a word starts next frame") is written in the frame before a word when that frame holds PAD;
- PAD everywhere else; tokens (and words) past the last frame are dropped.
Words are taken in order of start time (stable for equal starts). A word whose text gives no token (blank) is
skipped: it neither writes nor cuts anything. A negative start counts as 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .manifest import Word

# floor(s * rate) of times written with a few decimals: 0.24 s * 12.5 = 2.9999999999999996 must be frame 3.
_FRAME_EPS = 1e-6


def start_frame(start: float, frame_rate: float) -> int:
    """The frame a word starting at `start` seconds begins at: floor(start * frame_rate), never negative."""
    return max(0, math.floor(start * frame_rate + _FRAME_EPS))


def num_frames(samples: int, frame_size: int) -> int:
    """Codec frames of `samples` audio samples (the last partial frame counts, as Mimi pads it)."""
    return -(-samples // frame_size)


def text_stream(words: Sequence[Word], frames: int, frame_rate: float, encode: Callable[[str], list[int]],
                pad_id: int, epad_id: int) -> np.ndarray:
    """The text tokens [frames] (int32) of `words` (already the words of Moshi's stream) on the frame grid."""
    out = np.full(frames, pad_id, dtype=np.int32)
    placed: list[tuple[int, list[int]]] = []  # (start frame, tokens) in order of start
    for word in sorted(words, key=lambda w: w.start):
        tokens = encode(word.text.strip()) if word.text.strip() else []
        if not tokens:
            continue
        frame = start_frame(word.start, frame_rate)
        if frame >= frames:
            continue
        if placed and placed[-1][0] == frame:  # the same frame: the later word cuts the earlier one entirely
            placed.pop()
        placed.append((frame, tokens))
    for i, (frame, tokens) in enumerate(placed):
        stop = placed[i + 1][0] if i + 1 < len(placed) else frames  # the next word cuts this one
        n = min(len(tokens), stop - frame)
        if frame > 0 and out[frame - 1] == pad_id:
            out[frame - 1] = epad_id
        out[frame:frame + n] = tokens[:n]
    return out
