"""Moshi's audio as timed words, for the audio judge of `openmoshi eval dialogue`.

The recogniser is the codec report's (`eval.asr.WhisperASR`: Whisper tiny.en, offline, int8 on the CPU), asked
here for word timestamps so the reply windows, talk-over and delays can be judged on what Moshi SAID as on what
it wrote. Greedy decoding, no conditioning on earlier text (a hallucinated phrase does not repeat), and the
voice-activity filter off (it would need its own model; Whisper returns no words for silence often enough).
"""

from __future__ import annotations

import numpy as np

from ..inference.transcript import Word
from .asr import WhisperASR


def transcribe_words(asr: WhisperASR, audio: np.ndarray, sample_rate: int) -> list[Word]:
    """Mono float32 audio [T] at `sample_rate` -> words with start/end in seconds (from the audio's start)."""
    from ..audio import resample

    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0 or not np.any(audio):
        return []
    audio16 = resample(audio, sample_rate, 16_000)
    segments, _ = asr.model.transcribe(audio16, language="en", beam_size=1, word_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False)
    words = []
    for segment in segments:
        for w in segment.words or []:
            text = w.word.strip()
            if text:
                words.append(Word(text, round(float(w.start), 3), round(float(w.end), 3)))
    return words
