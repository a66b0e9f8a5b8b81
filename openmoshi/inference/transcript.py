"""Moshi's inner monologue as timed words, and writers for JSON and SRT.

The generator returns one text token per 80 ms step. A token output at step t is stamped t * 80 ms (the time on
the output grid, where Moshi's audio decoded at step t also lives). Pieces are joined into words: a piece that
begins with SentencePiece's word mark (U+2581) starts a new word, any other piece continues the current one.
PAD, EPAD, the initial token and the grid markers (-1 zero token, -2 nothing generated) carry no text and are
skipped. Byte-fallback pieces (<0xAB>) are gathered as bytes and decoded as UTF-8 so that characters outside
the vocabulary come out whole.

JSON follows the sidecar layout of Kyutai's fine-tuning data (`{"alignments": [[word, [start, end],
"SPEAKER_MAIN"], ...]}`), plus the full `text`, so a conversation's output can be reused as training data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..io_safety import write_text
from ..lm.text import WORD_MARK, TextTokenizer

FRAME_SECONDS = 0.08  # one 80 ms step at 12.5 Hz
SPEAKER = "SPEAKER_MAIN"  # Kyutai's label for Moshi's own speech in alignment sidecars


@dataclass(frozen=True)
class Word:
    """One word of the monologue: `start` is the stamp of its first piece, `end` that of its last piece + 80 ms."""

    text: str
    start: float
    end: float


class _WordBuilder:
    """Accumulates the pieces and bytes of the word being spelled."""

    def __init__(self, start_step: int) -> None:
        self.start_step = start_step
        self.last_step = start_step
        self.text = ""
        self.pending = bytearray()

    def add_text(self, text: str, step: int) -> None:
        self.flush_bytes()
        self.text += text
        self.last_step = step

    def add_byte(self, value: int, step: int) -> None:
        self.pending.append(value)
        self.last_step = step

    def flush_bytes(self) -> None:
        if self.pending:
            self.text += self.pending.decode("utf-8", errors="replace")
            self.pending.clear()

    def finish(self, frame_seconds: float) -> Word | None:
        self.flush_bytes()
        text = self.text.strip()
        if not text:
            return None
        return Word(text, round(self.start_step * frame_seconds, 3), round((self.last_step + 1) * frame_seconds, 3))


def words_from_tokens(
    tokens: Iterable[int], tokenizer: TextTokenizer, frame_seconds: float = FRAME_SECONDS
) -> list[Word]:
    """Text tokens, one per generator step (step t at index t), -> words with times in seconds."""
    sp = tokenizer.sp
    words: list[Word] = []
    current: _WordBuilder | None = None

    def close() -> None:
        if current is not None and (word := current.finish(frame_seconds)) is not None:
            words.append(word)

    for step, raw in enumerate(tokens):
        token = int(raw)
        if tokenizer.is_special(token) or sp.is_control(token) or sp.is_unknown(token):
            continue
        piece = sp.id_to_piece(token)
        if sp.is_byte(token):
            if current is None:
                current = _WordBuilder(step)
            current.add_byte(int(piece[3:5], 16), step)
            continue
        if piece.startswith(WORD_MARK) or current is None:
            close()
            current = _WordBuilder(step)
        current.add_text(piece.replace(WORD_MARK, " "), step)
    close()
    return words


def transcript_text(words: Iterable[Word]) -> str:
    return " ".join(w.text for w in words)


def write_json(path: str | Path, words: list[Word]) -> None:
    """`{"text": ..., "alignments": [[word, [start, end], "SPEAKER_MAIN"], ...]}` (times in seconds)."""
    payload = {
        "text": transcript_text(words),
        "alignments": [[w.text, [w.start, w.end], SPEAKER] for w in words],
    }
    write_text(path, json.dumps(payload, ensure_ascii=False, indent=1) + "\n")  # atomically


def read_json(path: str | Path) -> list[Word]:
    """Words back from a file written by `write_json` (or any Kyutai alignment sidecar)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Word(str(text), float(span[0]), float(span[1])) for text, span, *_ in data["alignments"]]


def _srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{ms:03d}"


def group_cues(
    words: list[Word], max_words: int = 12, max_seconds: float = 5.0, max_gap: float = 0.8
) -> list[list[Word]]:
    """Words grouped into subtitle cues: a cue ends after a sentence mark, a pause longer than `max_gap`,
    `max_words` words or `max_seconds`."""
    cues: list[list[Word]] = []
    cue: list[Word] = []
    for word in words:
        if cue and (
            word.start - cue[-1].end > max_gap
            or len(cue) >= max_words
            or word.end - cue[0].start > max_seconds
            or cue[-1].text[-1] in ".?!"
        ):
            cues.append(cue)
            cue = []
        cue.append(word)
    if cue:
        cues.append(cue)
    return cues


def to_srt(words: list[Word]) -> str:
    blocks = []
    for index, cue in enumerate(group_cues(words), start=1):
        span = f"{_srt_time(cue[0].start)} --> {_srt_time(cue[-1].end)}"
        blocks.append(f"{index}\n{span}\n{transcript_text(cue)}\n")
    return "\n".join(blocks)


def write_srt(path: str | Path, words: list[Word]) -> None:
    write_text(path, to_srt(words))  # atomically
