"""Validating a dataset: every problem at once, one line each naming the file, and a summary.

Only headers are read for audio (soundfile's `info`), so checking thousands of hours takes seconds. What is
checked, per entry (docs/data.md lists the same):
- the manifest line: JSON, an object with "path" and a positive "duration" (text files: duration optional);
- the audio file: exists, readable, 1 or 2 channels, a sample rate in ACCEPTED_RATES, at least one sample, the
  declared duration within `tolerance` seconds of the file's;
- the sidecar: exists, JSON, `alignments` well formed; each word non-empty, 0 <= start <= end, not past the end
  of the audio (beyond `tolerance`), and per speaker in order of start and not overlapping the previous word;
- text files: exist, UTF-8, not empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .manifest import (
    ACCEPTED_CHANNELS,
    ACCEPTED_RATES,
    MAIN_SPEAKER,
    ManifestEntry,
    Problem,
    Word,
    audio_info,
    moshi_words,
    parse_manifest,
    read_sidecar,
    read_text_file,
)

DEFAULT_TOLERANCE = 0.1  # seconds: manifest duration vs the file, words' ends vs the file's end
_OVERLAP_EPS = 1e-6  # aligners write times with a few decimals: a word may start where the previous ended


@dataclass
class Summary:
    """What a dataset holds (the valid parts): hours of audio, conversations, mono files, words, speakers."""

    seconds: float = 0.0
    conversations: int = 0  # 2-channel files
    mono: int = 0  # 1-channel files
    text_files: int = 0
    text_lines: int = 0
    words: int = 0  # aligned words, every speaker
    moshi_words: int = 0  # the words of Moshi's text stream
    speakers: set[str] = field(default_factory=set)
    silent_moshi: list[str] = field(default_factory=list)  # conversations with words but none of SPEAKER_MAIN

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    def lines(self) -> list[str]:
        return [f"{self.hours:.3f} hours ({self.seconds:.1f} s) of audio: {self.conversations} conversations "
                f"(2 channels), "
                f"{self.mono} single-stream files (1 channel); {self.text_files} text files "
                f"({self.text_lines} lines)",
                f"{self.words} aligned words ({self.moshi_words} in Moshi's text stream), "
                f"{len(self.speakers)} speakers: {', '.join(sorted(self.speakers)[:10])}"
                + (", ..." if len(self.speakers) > 10 else "")] + self.notes()

    def notes(self) -> list[str]:
        """Not errors, but likely mistakes worth a look."""
        if not self.silent_moshi:
            return []
        return [f"note: {len(self.silent_moshi)} conversations have words but none of {MAIN_SPEAKER}, so Moshi's "
                f"text stream stays PAD there (speaker labels of another convention?): "
                f"{', '.join(self.silent_moshi[:3])}" + (", ..." if len(self.silent_moshi) > 3 else "")]


@dataclass
class CheckResult:
    entries: list[ManifestEntry]
    problems: list[Problem]
    summary: Summary
    bad_entries: set[int]  # ManifestEntry.index of the entries with a problem

    @property
    def ok(self) -> bool:
        return not self.problems


def check_words(words: list[Word], duration: float | None, source: str, tolerance: float) -> list[Problem]:
    """Empty words, bad times, words past the end, and per speaker: out of order or overlapping."""
    problems: list[Problem] = []
    last: dict[str | None, Word] = {}
    for i, w in enumerate(words):
        label = f"word #{i} {w.text.strip()[:40]!r} [{w.start:g}, {w.end:g}]"
        if not w.text.strip():
            problems.append(Problem(source, f"empty word #{i} at [{w.start:g}, {w.end:g}]"))
        if w.start < 0:
            problems.append(Problem(source, f"{label} starts before 0"))
        if w.end < w.start:
            problems.append(Problem(source, f"{label} ends before it starts"))
        if duration is not None and w.end > duration + tolerance:
            problems.append(Problem(source, f"{label} ends past the end of the audio ({duration:.3f} s)"))
        prev = last.get(w.speaker)
        if prev is not None:
            who = f"speaker {w.speaker}" if w.speaker is not None else "the stream"
            if w.start < prev.start:
                problems.append(Problem(source, f"{label} is out of order: starts before the previous word of "
                                                f"{who} ({prev.text.strip()[:40]!r} at {prev.start:g})"))
            elif w.start < prev.end - _OVERLAP_EPS:
                problems.append(Problem(source, f"{label} overlaps the previous word of {who} "
                                                f"({prev.text.strip()[:40]!r} ending at {prev.end:g})"))
        last[w.speaker] = w
    return problems


def _check_audio(entry: ManifestEntry, tolerance: float, summary: Summary) -> list[Problem]:
    source = str(entry.path)
    if not entry.path.exists():
        return [Problem(source, f"missing audio file (manifest line {entry.line})")]
    if entry.path.is_dir():
        return [Problem(source, f"is a folder, expected an audio file (manifest line {entry.line})")]
    try:
        info = audio_info(entry.path)
    except (RuntimeError, OSError, TypeError) as err:
        return [Problem(source, f"unreadable audio ({str(err).strip().splitlines()[-1][:120]})")]
    problems: list[Problem] = []
    if info.channels not in ACCEPTED_CHANNELS:
        problems.append(Problem(source, f"{info.channels} channels: accepted are 2 (a conversation: channel 0 "
                                        f"Moshi, channel 1 the user) or 1 (single-stream speech)"))
    lo, hi = ACCEPTED_RATES
    if not lo <= info.sample_rate <= hi:
        problems.append(Problem(source, f"sample rate {info.sample_rate} Hz: accepted are {lo}..{hi} Hz "
                                        f"(resampled to 24 kHz)"))
    if info.samples == 0:
        problems.append(Problem(source, "no audio samples"))
    elif entry.duration is not None and abs(info.duration - entry.duration) > tolerance:
        problems.append(Problem(source, f"duration {entry.duration:g} s in the manifest (line {entry.line}) but "
                                        f"{info.duration:.3f} s in the file"))
    words, found = read_sidecar(entry.sidecar)
    problems += found
    problems += check_words(words, info.duration if info.samples else None, str(entry.sidecar), tolerance)
    if not problems:
        summary.seconds += info.duration
        if info.channels == 2:
            summary.conversations += 1
        else:
            summary.mono += 1
        summary.words += len(words)
        summary.moshi_words += len(moshi_words(words, info.channels))
        if info.channels == 2 and words and not moshi_words(words, 2):
            summary.silent_moshi.append(str(entry.sidecar))
        summary.speakers.update(w.speaker for w in words if w.speaker is not None)
    return problems


def _check_text(entry: ManifestEntry, summary: Summary) -> list[Problem]:
    source = str(entry.path)
    try:
        lines = read_text_file(entry.path)
    except FileNotFoundError:
        return [Problem(source, f"missing text file (manifest line {entry.line})")]
    except UnicodeDecodeError:
        return [Problem(source, "text file is not UTF-8")]
    except OSError as err:
        return [Problem(source, f"unreadable text file ({err})")]
    if not lines:
        return [Problem(source, "empty text file")]
    summary.text_files += 1
    summary.text_lines += len(lines)
    return []


def check_dataset(manifest: str | Path, tolerance: float = DEFAULT_TOLERANCE) -> CheckResult:
    """Check a manifest and everything it names; never raises on bad content."""
    entries, problems = parse_manifest(manifest)
    summary = Summary()
    bad: set[int] = set()
    for entry in entries:
        found = _check_text(entry, summary) if entry.kind == "text" else _check_audio(entry, tolerance, summary)
        if found:
            bad.add(entry.index)
            problems += found
    return CheckResult(entries, problems, summary, bad)

