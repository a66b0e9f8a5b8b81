"""`data check`: every problem listed once, one line naming the file; exit status; summary; headers only."""

from __future__ import annotations

import json

import soundfile as sf
from data_testutils import small_dataset, write_conversation, write_manifest, write_wav

from openmoshi.cli import main as cli
from openmoshi.data.check import check_dataset


def test_a_clean_dataset_passes_with_a_summary(tmp_path, capsys):
    manifest = small_dataset(tmp_path, n=4, text=True)
    result = check_dataset(manifest)
    assert result.ok, result.problems
    s = result.summary
    assert (s.conversations, s.mono, s.text_files) == (3, 1, 1)
    assert abs(s.seconds - (1.5 + 2.0 + 2.5 + 3.0)) < 1e-3
    assert s.speakers == {"SPEAKER_MAIN", "SPEAKER_USER"}
    assert cli(["data", "check", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "0.003 hours" in out and "3 conversations" in out and "2 speakers" in out and "OK" in out


def _broken(tmp_path):
    d = tmp_path
    lines = [write_conversation(d, "good", 2.0, [["hi", [0.1, 0.3], "SPEAKER_MAIN"]])]
    lines.append({"path": "missing.wav", "duration": 1.0})
    lines.append("{not json")
    lines.append({"duration": 1.0})
    (d / "garbage.wav").write_bytes(b"RIFF nothing like a wav")
    lines.append({"path": "garbage.wav", "duration": 1.0})
    write_wav(d / "three.wav", 1.0, channels=3)
    (d / "three.json").write_text(json.dumps({"alignments": []}))
    lines.append({"path": "three.wav", "duration": 1.0})
    lines.append(write_conversation(d, "lowrate", 1.0, [], rate=4000))
    lines.append({**write_conversation(d, "long", 2.0, []), "duration": 3.0})
    lines.append(write_conversation(d, "words", 2.0, [
        ["one", [0.5, 0.8], "SPEAKER_MAIN"], ["two", [0.3, 0.4], "SPEAKER_MAIN"],  # out of order
        ["three", [0.9, 1.2], "SPEAKER_MAIN"], ["four", [1.1, 1.3], "SPEAKER_MAIN"],  # overlap
        ["u1", [0.0, 1.0], "SPEAKER_USER"], ["u2", [0.2, 0.5], "SPEAKER_USER"],  # the user overlaps itself
        ["late", [1.5, 2.6], "SPEAKER_MAIN"],  # past the end
        ["  ", [1.4, 1.45], "SPEAKER_OTHER"],  # empty word
        ["back", [1.9, 1.8], "SPEAKER_OTHER"],  # ends before it starts
    ]))
    write_wav(d / "badside.wav", 1.0)
    (d / "badside.json").write_text("{\"alignments\": [")
    lines.append({"path": "badside.wav", "duration": 1.0})
    write_wav(d / "noside.wav", 1.0)
    lines.append({"path": "noside.wav", "duration": 1.0})
    write_wav(d / "shape.wav", 1.0)
    (d / "shape.json").write_text(json.dumps({"alignments": [["ok", [0.1, 0.2], "SPEAKER_MAIN"], ["x", 0.3]]}))
    lines.append({"path": "shape.wav", "duration": 1.0})
    lines.append({"path": "words.wav", "duration": -1})
    return write_manifest(d / "m.jsonl", lines)


EXPECTED = [  # (file suffix, words in the message)
    ("missing.wav", "missing audio"),
    ("m.jsonl:3", "bad JSON"),
    ("m.jsonl:4", "missing \"path\""),
    ("garbage.wav", "unreadable audio"),
    ("three.wav", "3 channels"),
    ("lowrate.wav", "sample rate 4000"),
    ("long.wav", "duration 3 s in the manifest"),
    ("words.json", "'two' [0.3, 0.4] is out of order"),
    ("words.json", "'four' [1.1, 1.3] overlaps"),
    ("words.json", "'u2' [0.2, 0.5] overlaps"),
    ("words.json", "'late' [1.5, 2.6] ends past the end"),
    ("words.json", "empty word #7"),
    ("words.json", "'back' [1.9, 1.8] ends before it starts"),
    ("badside.json", "bad JSON"),
    ("noside.json", "missing sidecar"),
    ("shape.json", "bad alignment #1"),
    ("m.jsonl:13", "\"duration\" must be a positive number"),
]


def test_every_problem_is_listed_once_naming_its_file(tmp_path, capsys):
    manifest = _broken(tmp_path)
    result = check_dataset(manifest)
    lines = [str(p) for p in result.problems]
    for suffix, words in EXPECTED:
        hits = [line for line in lines if line.split(": ")[0].endswith(suffix) and words in line]
        assert len(hits) == 1, (suffix, words, lines)
    assert len(lines) == len(EXPECTED), lines
    assert result.summary.conversations == 1  # only good.wav counts
    assert cli(["data", "check", str(manifest)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:len(lines)] == lines
    assert f"{len(lines)} problems" in out[-1]


def test_check_reads_headers_only(tmp_path, monkeypatch):
    manifest = small_dataset(tmp_path, n=3)

    def no_read(*args, **kwargs):
        raise AssertionError("data check must not read the samples")

    monkeypatch.setattr(sf, "read", no_read)
    assert check_dataset(manifest).ok


def test_missing_or_empty_manifest_and_text_lists(tmp_path, capsys):
    assert cli(["data", "check", str(tmp_path / "nope.jsonl")]) == 1
    assert "manifest not found" in capsys.readouterr().out
    (tmp_path / "empty.jsonl").write_text("\n")
    assert cli(["data", "check", str(tmp_path / "empty.jsonl")]) == 1
    assert "empty manifest" in capsys.readouterr().out
    (tmp_path / "a.txt").write_text("some text\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "list.txt").write_text("a.txt\nempty.txt\nmissing.txt\n")
    result = check_dataset(tmp_path / "list.txt")
    assert sorted(p.message.split(" (")[0] for p in result.problems) == ["empty text file", "missing text file"]
    assert result.summary.text_files == 1


def test_a_note_for_conversations_without_moshi_words(tmp_path, capsys):
    line = write_conversation(tmp_path, "c", 1.0, [["hi", [0.1, 0.2], "SPEAKER_0"], ["yo", [0.3, 0.4], "SPEAKER_1"]])
    manifest = write_manifest(tmp_path / "m.jsonl", [line])
    assert cli(["data", "check", str(manifest)]) == 0  # not an error
    out = capsys.readouterr().out
    assert "note: 1 conversations have words but none of SPEAKER_MAIN" in out and "c.json" in out
