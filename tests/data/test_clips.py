"""`openmoshi data clips` (openmoshi/data/clips.py): utterances from word alignments, clips cut from the right
channel with their words, limits, and user mistakes refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from data_testutils import write_manifest

from openmoshi.cli import main as cli
from openmoshi.data.clips import cut_clips, utterances
from openmoshi.data.manifest import Word

M, U = "SPEAKER_MAIN", "SPEAKER_USER"


def conversation(folder: Path, name: str, words: list, seconds: float = 6.0, channels: int = 2) -> dict:
    """Each channel holds its own constant level (0.1 x (c + 1)), so a clip shows which channel it came from."""
    rate = 24_000
    data = np.ones((int(seconds * rate), channels), np.float32) * (0.1 * (np.arange(channels) + 1))
    sf.write(str(folder / f"{name}.wav"), data[:, 0] if channels == 1 else data, rate, subtype="PCM_16")
    (folder / f"{name}.json").write_text(json.dumps({"alignments": words}))
    return {"path": f"{name}.wav", "duration": seconds}


WORDS = [["What", [0.5, 0.8], U], ["is", [0.9, 1.0], U], ["two", [1.1, 1.3], U],  # a user question...
         ["mm-hm", [1.2, 1.4], M],  # ...with Moshi's backchannel on the other channel: no cut
         ["plus", [1.5, 1.8], U], ["three?", [1.9, 2.3], U],
         ["Five.", [2.6, 3.0], M], ["It", [3.1, 3.2], M], ["is", [3.2, 3.4], M], ["five.", [3.5, 3.9], M],
         ["Bye", [5.0, 5.3], U]]


def test_utterances_follow_speakers_and_pauses() -> None:
    words = [Word(t, s, e, sp) for t, (s, e), sp in WORDS]
    got = [(u.role, u.text) for u in utterances(words, 2)]
    assert got == [("user", "What is two plus three?"), ("moshi", "mm-hm"), ("moshi", "Five. It is five."),
                   ("user", "Bye")]
    assert [u.text for u in utterances(words, 2, max_gap=0.15)][:3] == ["What is two", "mm-hm", "plus three?"]
    assert {u.channel for u in utterances(words, 1)} == {0}  # mono: one speaker


def test_clips_are_cut_from_their_channel_with_their_words(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    manifest = write_manifest(data / "m.jsonl", [conversation(data, "c0", WORDS), conversation(data, "c1", WORDS)])
    clips = cut_clips(manifest, tmp_path / "clips", per_conversation=2, pad=0.25)
    assert [p.name for p in clips] == ["c0_000_user.wav", "c0_002_moshi.wav", "c1_000_user.wav", "c1_002_moshi.wav"]
    audio, rate = sf.read(str(clips[0]))
    assert rate == 24_000 and audio.ndim == 1
    assert abs(len(audio) / rate - (2.3 - 0.5 + 0.5)) < 0.01  # the words plus 0.25 s either side
    assert np.allclose(audio, 0.2, atol=1e-3)  # the user's channel (1)
    assert np.allclose(sf.read(str(clips[1]))[0], 0.1, atol=1e-3)  # Moshi's (0)
    assert clips[1].with_suffix(".txt").read_text() == "Five. It is five.\n"
    assert len(cut_clips(manifest, tmp_path / "few", max_clips=3)) == 3
    assert len(cut_clips(manifest, tmp_path / "one", per_conversation=1)) == 2
    # the short ones (the backchannel, "Bye") only below the length limit
    assert {p.name for p in cut_clips(manifest, tmp_path / "all", per_conversation=9, min_seconds=0.1)} >= {
        "c0_001_moshi.wav", "c0_003_user.wav"}


def test_command_and_its_refusals(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    manifest = write_manifest(data / "m.jsonl", [conversation(data, "c0", WORDS)])
    assert cli(["data", "clips", str(manifest), "--out", str(tmp_path / "clips")]) == 0
    assert "2 clips (1 of Moshi, 1 of the user)" in capsys.readouterr().out
    assert cli(["data", "clips", str(manifest), "--out", str(tmp_path / "clips")]) == 1  # not empty
    assert "not an empty folder" in capsys.readouterr().err
    assert cli(["data", "clips", str(manifest), "--out", str(data / "clips")]) == 1
    assert "inside the dataset's folder" in capsys.readouterr().err
    assert cli(["data", "clips", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x")]) == 1
    assert "manifest not found" in capsys.readouterr().err
    silent = write_manifest(data / "silent.jsonl", [conversation(data, "c1", [])])
    assert cli(["data", "clips", str(silent), "--out", str(tmp_path / "y")]) == 1
    assert "no utterance" in capsys.readouterr().err
