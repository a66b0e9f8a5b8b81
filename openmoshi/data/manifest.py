"""Reading a dataset: the JSONL manifest, the alignment sidecars, audio headers and channels, text files.

The format (Kyutai's fine-tuning layout; docs/data.md):
- a JSONL manifest, one object per line: `{"path": "rel/or/abs.wav", "duration": seconds}`, paths relative to
  the manifest's folder; extra keys are kept (`ManifestEntry.extra`) and ignored;
- an audio file with 2 channels is a conversation (channel 0 = Moshi, channel 1 = the user), with 1 channel
  single-stream speech (all of its words are Moshi's text); any sample rate in `ACCEPTED_RATES`;
- beside each audio file a sidecar JSON of the same stem (`x.wav` -> `x.json`):
  `{"alignments": [[word, [start_s, end_s], speaker], ...]}` (speaker "SPEAKER_MAIN" = Moshi); other keys
  are allowed and ignored;
- a manifest line whose path ends in `.txt` is a plain UTF-8 text file (text-only batches; no duration needed).
  A `.txt` file given instead of a manifest is a list of such text files, one path per line.

Parsing never raises on bad content: it returns records plus `Problem`s (one per defect, naming the file), so
`data check` can list every problem at once. `read_manifest` is the strict form for `data prepare`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

MAIN_SPEAKER = "SPEAKER_MAIN"
ACCEPTED_CHANNELS = (1, 2)
ACCEPTED_RATES = (8_000, 192_000)  # inclusive bounds in Hz; everything is resampled to Mimi's rate (24 kHz)
TEXT_SUFFIX = ".txt"

EntryKind = Literal["audio", "text"]


class ManifestError(ValueError):
    """A dataset that cannot be used; the message lists the problems."""


@dataclass(frozen=True)
class Problem:
    """One defect of a dataset: the file it is in (and the line, for the manifest) and what is wrong."""

    file: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Word:
    """One aligned word: its text, start and end in seconds, and its speaker (None: not given, mono data)."""

    text: str
    start: float
    end: float
    speaker: str | None = None


@dataclass(frozen=True)
class ManifestEntry:
    """One line of a manifest: the resolved path, the declared duration (None for text files), the raw line."""

    index: int  # position among the manifest's entries (0-based; blank lines skipped)
    line: int  # 1-based line number in the manifest
    path: Path
    raw_path: str
    duration: float | None
    kind: EntryKind
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.path)


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file's header says."""

    channels: int
    sample_rate: int
    samples: int

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate


def sidecar_path(audio: Path) -> Path:
    """`x.wav` -> `x.json`."""
    return audio.with_suffix(".json")


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _entry(obj: Any, folder: Path, index: int, line: int, source: str) -> tuple[ManifestEntry | None, list[Problem]]:
    if not isinstance(obj, dict):
        return None, [Problem(source, f"expected a JSON object {{\"path\": ..., \"duration\": ...}}, got "
                                      f"{type(obj).__name__}", line)]
    raw = obj.get("path")
    if not isinstance(raw, str) or not raw.strip():
        return None, [Problem(source, "missing \"path\" (a non-empty string)", line)]
    path = Path(raw).expanduser()
    path = path if path.is_absolute() else folder / path
    kind: EntryKind = "text" if path.suffix.lower() == TEXT_SUFFIX else "audio"
    duration = obj.get("duration")
    extra = {k: v for k, v in obj.items() if k not in ("path", "duration")}
    if duration is None and kind == "text":
        return ManifestEntry(index, line, path, raw, None, kind, extra), []
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
            or duration <= 0:
        return None, [Problem(source, f"\"duration\" must be a positive number of seconds, got {duration!r} "
                                      f"({raw})", line)]
    return ManifestEntry(index, line, path, raw, float(duration), kind, extra), []


def parse_manifest(path: str | Path) -> tuple[list[ManifestEntry], list[Problem]]:
    """Entries and problems of a JSONL manifest, or of a `.txt` list of text files (one path per line)."""
    path = Path(path).expanduser()
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return [], [Problem(source, "manifest not found")]
    except IsADirectoryError:
        return [], [Problem(source, "is a folder, expected a JSONL manifest (or a .txt list of text files)")]
    except (OSError, UnicodeDecodeError) as err:
        return [], [Problem(source, f"cannot read the manifest ({err})")]
    folder = path.parent
    entries: list[ManifestEntry] = []
    problems: list[Problem] = []
    is_list = path.suffix.lower() == TEXT_SUFFIX
    for number, raw_line in enumerate(text.splitlines(), start=1):
        stripped = raw_line.strip()
        if not stripped:
            continue
        if is_list:
            obj: Any = {"path": stripped}
        else:
            try:
                obj = json.loads(stripped)
            except json.JSONDecodeError as err:
                problems.append(Problem(source, f"bad JSON ({err.msg} at column {err.colno})", number))
                continue
        entry, found = _entry(obj, folder, len(entries), number, source)
        problems += found
        if entry is not None:
            if is_list and entry.kind != "text":
                problems.append(Problem(source, f"a .txt list names text files only, got {stripped}", number))
                continue
            entries.append(entry)
    if not entries and not problems:
        problems.append(Problem(source, "no entries (an empty manifest)"))
    return entries, problems


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """The entries of a manifest; ManifestError listing every problem of the manifest itself."""
    entries, problems = parse_manifest(path)
    if problems:
        raise ManifestError("\n".join(str(p) for p in problems))
    return entries


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_alignments(raw: Any, source: str) -> tuple[list[Word], list[Problem]]:
    """Words of a sidecar's parsed JSON (`{"alignments": [[word, [start, end], speaker], ...]}`)."""
    if not isinstance(raw, dict):
        return [], [Problem(source, "bad sidecar: expected a JSON object with an \"alignments\" list")]
    items = raw.get("alignments")
    if not isinstance(items, list):
        return [], [Problem(source, "bad sidecar: \"alignments\" must be a list of [word, [start, end], speaker]")]
    words: list[Word] = []
    problems: list[Problem] = []
    for i, item in enumerate(items):
        ok = isinstance(item, (list, tuple)) and len(item) in (2, 3) and isinstance(item[0], str) \
            and isinstance(item[1], (list, tuple)) and len(item[1]) == 2 and all(_number(t) for t in item[1]) \
            and (len(item) == 2 or isinstance(item[2], str))
        if not ok:
            problems.append(Problem(source, f"bad alignment #{i}: expected [word, [start, end], speaker], got "
                                            f"{json.dumps(item)[:80]}"))
            continue
        speaker = item[2] if len(item) == 3 else None
        words.append(Word(item[0], float(item[1][0]), float(item[1][1]), speaker))
    return words, problems


def read_sidecar(path: Path) -> tuple[list[Word], list[Problem]]:
    """Words of a sidecar file, and its problems (missing, unreadable, bad JSON, malformed entries)."""
    source = str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        return [], [Problem(source, "missing sidecar (the word alignments, same stem as the audio, .json)")]
    except json.JSONDecodeError as err:
        return [], [Problem(source, f"bad JSON ({err.msg} at line {err.lineno} column {err.colno})")]
    except (OSError, UnicodeDecodeError) as err:
        return [], [Problem(source, f"cannot read the sidecar ({err})")]
    return parse_alignments(raw, source)


def audio_info(path: Path) -> AudioInfo:
    """The header of an audio file (nothing else is read). OSError/RuntimeError when it cannot be read."""
    import soundfile as sf

    info = sf.info(str(path))
    return AudioInfo(int(info.channels), int(info.samplerate), int(info.frames))


def read_channels(path: Path, sample_rate: int) -> np.ndarray:
    """The channels of an audio file as float32 [C, T] at `sample_rate` (each resampled apart). AudioError."""
    import soundfile as sf

    from ..audio import AudioError, resample

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as err:
        raise AudioError(f"cannot read {path} as audio ({err})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path} contains no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path} contains NaN or infinite samples")
    return np.stack([resample(np.ascontiguousarray(data[:, c]), rate, sample_rate) for c in range(data.shape[1])])


def read_text_file(path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file (each is tokenized on its own, then packed)."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def moshi_words(words: list[Word], channels: int, main_speaker: str = MAIN_SPEAKER) -> list[Word]:
    """The words of Moshi's text stream: SPEAKER_MAIN's in a conversation (2 channels), all of them in mono."""
    if channels == 1:
        return list(words)
    return [w for w in words if w.speaker == main_speaker]


def user_words(words: list[Word], channels: int, main_speaker: str = MAIN_SPEAKER) -> list[Word]:
    """The user's words of a conversation (2 channels): everyone's but SPEAKER_MAIN's; none in mono."""
    if channels == 1:
        return []
    return [w for w in words if w.speaker != main_speaker]
