"""The held-out conversations of `openmoshi eval dialogue`: a manifest of `openmoshi data synth --split eval`.

Each manifest entry is a stereo wav (channel 0 = Moshi, channel 1 = the user) with a sidecar JSON holding, besides
the word `alignments`, the synthesiser's `turns` (who spoke, what kind of line, start/end in seconds) and
`questions` (family, key, the accepted `answers`, `asked_end`: the end of the question's last word,
`reply_start`: the start of Moshi's answer in the ground truth); docs/synth.md describes them. Only the sidecars
are read here (cheap); the audio is read when a conversation is run (`read_user`, `read_moshi`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.manifest import MAIN_SPEAKER, parse_manifest
from ..inference.transcript import Word

SYNTH_HINT = "the eval needs held-out conversations made by `openmoshi data synth --split eval --out DIR`"


class DialogueDataError(ValueError):
    """A manifest or sidecar the evaluation cannot use; the message names the file and the problem."""


@dataclass(frozen=True)
class Question:
    """One asked question: `answers` are the accepted answers (any one in Moshi's reply counts as right)."""

    family: str
    key: str
    text: str
    answers: tuple[str, ...]
    reply: str  # the ground truth's reply
    asked_end: float  # seconds: the end of the question's last word
    reply_start: float | None  # seconds: the ground truth's answer starts


@dataclass(frozen=True)
class Turn:
    """One line of the conversation (user or Moshi), as the synthesiser planned and placed it."""

    speaker: str  # "SPEAKER_MAIN" (Moshi) or the user's label
    kind: str  # greeting, question, answer, smalltalk, long, backchannel, thanks, goodbye
    timing: str  # after, during, interrupt
    text: str
    start: float
    end: float

    @property
    def is_moshi(self) -> bool:
        return self.speaker == MAIN_SPEAKER

    @property
    def is_backchannel(self) -> bool:
        return self.kind == "backchannel"


@dataclass(frozen=True)
class Conversation:
    """A held-out conversation: its wav, its ground truth (Moshi's words, the turns) and its questions."""

    index: int  # position in the manifest
    name: str  # the wav's path as the manifest gives it
    path: Path
    duration: float
    moshi_words: tuple[Word, ...]  # the ground truth's Moshi words (alignments of SPEAKER_MAIN)
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]

    @property
    def user_turns(self) -> list[Turn]:
        return [t for t in self.turns if not t.is_moshi]

    def read_channels(self, sample_rate: int) -> np.ndarray:
        """[2, T] float32 at `sample_rate`: Moshi's channel, then the user's. AudioError when unreadable."""
        from ..data.manifest import read_channels

        audio = read_channels(self.path, sample_rate)
        if audio.shape[0] != 2:
            from ..audio import AudioError

            raise AudioError(f"{self.path}: expected a stereo conversation (Moshi left, the user right), got "
                             f"{audio.shape[0]} channel(s)")
        return audio


def _float(value: Any, what: str, source: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DialogueDataError(f"{source}: {what} must be a number of seconds, got {value!r}")
    return float(value)


def _question(raw: Any, source: Path) -> Question:
    if not isinstance(raw, dict):
        raise DialogueDataError(f"{source}: each entry of \"questions\" must be an object, got {raw!r}")
    answers = raw.get("answers")
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise DialogueDataError(f"{source}: question {raw.get('key')!r} needs \"answers\", a non-empty list of "
                                f"strings")
    reply_start = raw.get("reply_start")
    return Question(family=str(raw.get("family", "?")), key=str(raw.get("key", "?")),
                    text=str(raw.get("question", "")), answers=tuple(answers), reply=str(raw.get("reply", "")),
                    asked_end=_float(raw.get("asked_end"), "a question's \"asked_end\"", source),
                    reply_start=None if reply_start is None else _float(reply_start, "\"reply_start\"", source))


def _turns(raw: Any, source: Path) -> list[Turn]:
    if not isinstance(raw, list):
        raise DialogueDataError(f"{source}: no \"turns\" list; {SYNTH_HINT}")
    turns = []
    for t in raw:
        if not isinstance(t, dict):
            raise DialogueDataError(f"{source}: each entry of \"turns\" must be an object, got {t!r}")
        if t.get("start") is None or t.get("end") is None:  # a line cut before its first word: nothing was said
            continue
        turns.append(Turn(str(t.get("speaker", "")), str(t.get("kind", "")), str(t.get("timing", "after")),
                          str(t.get("text", "")), _float(t["start"], "a turn's \"start\"", source),
                          _float(t["end"], "a turn's \"end\"", source)))
    return sorted(turns, key=lambda t: t.start)


def read_sidecar(path: Path, index: int, name: str, duration: float) -> Conversation:
    side = path.with_suffix(".json")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DialogueDataError(f"{side}: sidecar not found (the alignments, turns and questions of {name})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DialogueDataError(f"{side}: cannot read the sidecar ({err})") from None
    if not isinstance(data, dict):
        raise DialogueDataError(f"{side}: expected a JSON object")
    if "questions" not in data:
        raise DialogueDataError(f"{side}: no \"questions\": {SYNTH_HINT}")
    if not isinstance(data["questions"], list):
        raise DialogueDataError(f"{side}: \"questions\" must be a list")
    words = []
    for item in data.get("alignments") or []:
        try:
            text, (start, end), speaker = item[0], item[1], item[2]
        except (TypeError, ValueError, IndexError):
            raise DialogueDataError(f"{side}: bad alignment {item!r} (expected [word, [start, end], speaker])") \
                from None
        if speaker == MAIN_SPEAKER:
            words.append(Word(str(text), _float(start, "a word's start", side), _float(end, "a word's end", side)))
    return Conversation(index=index, name=name, path=path, duration=duration, moshi_words=tuple(words),
                        turns=tuple(_turns(data.get("turns"), side)),
                        questions=tuple(_question(q, side) for q in data["questions"]))


def load_conversations(manifest: str | Path, limit: int | None = None) -> list[Conversation]:
    """The first `limit` (None: all) conversations of a manifest, sidecars read and checked. DialogueDataError."""
    entries, problems = parse_manifest(manifest)
    if problems:
        raise DialogueDataError("\n".join(str(p) for p in problems[:20]))
    entries = [e for e in entries if e.kind == "audio"][:limit]
    if not entries:
        raise DialogueDataError(f"{manifest}: no conversations (audio entries) in the manifest; {SYNTH_HINT}")
    from ..data.manifest import audio_info

    conversations = []
    for e in entries:
        if not e.path.is_file():
            raise DialogueDataError(f"{manifest}:{e.line}: audio file not found: {e.path}")
        try:
            channels = audio_info(e.path).channels
        except (OSError, RuntimeError) as err:
            raise DialogueDataError(f"{e.path}: cannot read the audio header ({err})") from None
        if channels != 2:
            raise DialogueDataError(f"{e.path}: {channels} channel(s); a conversation is a stereo wav (Moshi left, "
                                    f"the user right): {SYNTH_HINT}")
        conversations.append(read_sidecar(e.path, e.index, e.raw_path, float(e.duration or 0.0)))
    if not any(c.questions for c in conversations):
        raise DialogueDataError(f"{manifest}: the conversations ask no questions; {SYNTH_HINT}")
    return conversations
