"""Cut a conversation dataset into short mono clips with their words: the held-out speech `eval codec` scores.

A stereo conversation (channel 0 = Moshi, channel 1 = the user) becomes utterances: runs of one speaker's aligned
words with no pause longer than `max_gap` seconds. Each utterance of at least `min_seconds` is cut from its own
channel with `pad` seconds either side, and written as `NAME.wav` (mono, 24 kHz) next to `NAME.txt` (its words):
the sidecar `openmoshi eval codec` reads as the reference text. Mono files give single-speaker utterances.

Clips are taken conversation by conversation, in manifest order, at most `per_conversation` from each, Moshi's and
the user's turns alternating, so a few hundred clips cover many user voices and Moshi's alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .manifest import MAIN_SPEAKER, ManifestError, Word, read_channels, read_manifest, read_sidecar

SAMPLE_RATE = 24_000


@dataclass(frozen=True)
class Utterance:
    """One speaker's run of words: channel 0 (Moshi) or 1 (the user), start and end in seconds, the words."""

    channel: int
    start: float
    end: float
    text: str

    @property
    def role(self) -> str:
        return "moshi" if self.channel == 0 else "user"


def utterances(words: list[Word], channels: int, max_gap: float = 0.6) -> list[Utterance]:
    """Group aligned words into utterances (a new one at a change of speaker or a pause over `max_gap` s),
    ordered by start time. In a mono file every word is on channel 0."""
    runs: list[list[Word]] = []
    for w in sorted(words, key=lambda w: (w.start, w.end)):
        channel = _channel(w, channels)
        # a word joins the latest run of its channel if it follows closely: the other side's words in between
        # (a backchannel on the other channel) do not cut it
        last = next((r for r in reversed(runs) if _channel(r[0], channels) == channel), None)
        if last is not None and w.start - last[-1].end <= max_gap:
            last.append(w)
        else:
            runs.append([w])
    return sorted((Utterance(_channel(r[0], channels), r[0].start, r[-1].end, " ".join(w.text for w in r))
                   for r in runs), key=lambda u: u.start)


def _channel(w: Word, channels: int) -> int:
    return 0 if channels == 1 or w.speaker == MAIN_SPEAKER else 1


def _alternate(utts: list[Utterance]) -> Iterator[tuple[int, Utterance]]:
    """(index in time order, utterance): the user's and Moshi's taken in turn (each side in time order)."""
    sides = [[(i, u) for i, u in enumerate(utts) if u.channel == c] for c in (1, 0)]
    for i in range(max(len(s) for s in sides) if utts else 0):
        for side in sides:
            if i < len(side):
                yield side[i]


def cut_clips(manifest: str | Path, out: str | Path, *, max_clips: int = 200, per_conversation: int = 2,
              min_seconds: float = 1.0, pad: float = 0.25, max_gap: float = 0.6) -> list[Path]:
    """Write up to `max_clips` clips (NAME.wav + NAME.txt) of the manifest's conversations into `out`; returns
    the wav paths. Entries without alignments are skipped. Raises ManifestError (a bad manifest, or no clip)."""
    from ..audio import write_wav
    from ..io_safety import write_text

    out = Path(out)
    written: list[Path] = []
    for entry in read_manifest(manifest):
        if len(written) >= max_clips:
            break
        if entry.duration is None or not entry.sidecar.is_file():
            continue
        words, problems = read_sidecar(entry.sidecar)
        if problems:
            raise ManifestError(f"{entry.sidecar}: {problems[0].message}")
        audio = read_channels(entry.path, SAMPLE_RATE)  # [C, T]
        taken = 0
        for i, u in _alternate(utterances(words, audio.shape[0], max_gap)):
            if taken >= per_conversation or len(written) >= max_clips:
                break
            if u.end - u.start < min_seconds or not u.text.strip():
                continue
            lo = max(0, int((u.start - pad) * SAMPLE_RATE))
            hi = min(audio.shape[1], int(np.ceil((u.end + pad) * SAMPLE_RATE)))
            name = f"{entry.path.stem}_{i:03d}_{u.role}"
            write_wav(out / f"{name}.wav", audio[min(u.channel, audio.shape[0] - 1), lo:hi])
            write_text(out / f"{name}.txt", u.text.strip() + "\n")
            written.append(out / f"{name}.wav")
            taken += 1
    if not written:
        raise ManifestError(f"{manifest}: no utterance of at least {min_seconds} s with aligned words")
    return written
