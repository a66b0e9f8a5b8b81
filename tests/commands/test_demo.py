"""`openmoshi demo` (a conversation with the bundled model over the bundled question) and the bundled model as
the default of `chat` and `serve`, with a tiny stand-in model (80 ms frames, 24 kHz) as the bundled folder."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from openmoshi import cli, default_model
from openmoshi.audio import read_audio
from openmoshi.commands import demo
from openmoshi.inference.transcript import read_json
from openmoshi.lm.config import DEFAULT_REPO

QUESTION = "Hi there. What is two plus three?"
FAST = ["--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    from openmoshi.testing.server_model import build_server_repo

    return build_server_repo(tmp_path_factory.mktemp("nanomoshi"), seed=5)


@pytest.fixture
def bundled(stand_in, monkeypatch) -> Path:
    monkeypatch.setattr(default_model, "_BUNDLED", stand_in)
    return stand_in


@pytest.fixture
def no_weights(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "empty_nanomoshi"
    folder.mkdir()
    (folder / "README.md").write_text("the weights go here\n")
    monkeypatch.setattr(default_model, "_BUNDLED", folder)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_writes_the_conversation_and_says_what_moshi_answered(bundled, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", *FAST, "--answer-seconds", "0.5"]) == 0  # the bundled question
    out, err = capsys.readouterr()
    folder = tmp_path / "openmoshi-demo"
    assert sorted(p.name for p in folder.iterdir()) == ["conversation.json", "conversation.srt", "conversation.wav"]
    words = read_json(folder / "conversation.json")
    said = demo.printable(" ".join(w.text for w in words))
    lines = out.splitlines()
    assert lines[0] == f"You:   {QUESTION}"
    assert lines[1] == (f"Moshi: {said}" if words else "Moshi: (no words in its text stream)")
    assert "`openmoshi serve`, then open http://localhost:8998" in out
    assert f"--model {DEFAULT_REPO}" in out and str(bundled) in err
    assert all(c.isprintable() for c in out.replace("\n", ""))  # a model's raw bytes never reach the terminal
    # the stereo wav: the user's side (right) is the question then the answer's silence, Moshi's on the left
    question = read_audio(default_model.bundled_question())
    wav, rate = sf.read(folder / "conversation.wav", dtype="float32")
    frames = math.ceil((len(question) + 12_000) / 1920) + 1  # + max_delay (the stand-in's acoustic delay 1)
    assert rate == 24_000 and wav.shape == (frames * 1920, 2)
    np.testing.assert_allclose(wav[: len(question), 1], question, atol=1 / 32767)
    assert not wav[len(question):, 1].any() and wav[:, 0].any()
    srt = (folder / "conversation.srt").read_text()
    assert all(w.text in srt for w in words)


def test_the_demo_is_chats_conversation_with_the_bundled_model(bundled, tmp_path, capsys):
    """`chat` without --model uses the bundled model; over the same audio and seed it says what the demo said."""
    user = (0.1 * np.random.default_rng(1).standard_normal(20_000)).astype(np.float32)
    sf.write(tmp_path / "short.wav", user, 24_000, subtype="FLOAT")
    assert cli.main(["demo", *FAST, "-i", str(tmp_path / "short.wav"), "--answer-seconds", "0.3",
                     "-o", str(tmp_path / "demo")]) == 0
    sf.write(tmp_path / "user.wav", np.concatenate([user, np.zeros(7200, np.float32)]), 24_000, subtype="FLOAT")
    assert cli.main(["chat", *FAST, "--seed", str(demo.DEMO_SEED), "-i", str(tmp_path / "user.wav"),
                     "-o", str(tmp_path / "chat" / "c.wav")]) == 0
    capsys.readouterr()
    demo_wav, _ = sf.read(tmp_path / "demo" / "conversation.wav")
    chat_wav, _ = sf.read(tmp_path / "chat" / "c.wav")
    assert demo_wav.shape == chat_wav.shape == ((math.ceil(27_200 / 1920) + 1) * 1920, 2)
    np.testing.assert_array_equal(demo_wav, chat_wav)
    assert read_json(tmp_path / "demo" / "conversation.json") == read_json(tmp_path / "chat" / "c.json")


def test_serve_and_chat_default_to_the_bundled_model(bundled) -> None:
    from openmoshi.commands import chat, demo, serve
    from openmoshi.model_files import files_from_args

    for module in (chat, serve, demo):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        assert files_from_args(parser.parse_args([])).source == str(bundled), module.__name__
        assert "bundled nanomoshi" in " ".join(parser.format_help().split()), module.__name__
        kyutai = parser.parse_args(["--model", DEFAULT_REPO])
        assert kyutai.model == DEFAULT_REPO


@pytest.mark.parametrize("argv", [["demo"], ["chat", "-i", "{q}", "-o", "{tmp}/c.wav"], ["serve", "--port", "0"]])
def test_without_weights_every_default_names_both_ways_out(no_weights, tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    argv = [a.format(q=default_model.bundled_question(), tmp=tmp_path) for a in argv]
    assert cli.main([*argv, "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the bundled model (nanomoshi) is not in this checkout") and "Traceback" not in err
    assert "scripts/train_nanomoshi.sh" in err and f"--model {DEFAULT_REPO}" in err
    assert _files(tmp_path) == before  # nothing written


def test_demo_refuses_bad_output_folders_before_loading(no_weights, tmp_path, capsys):
    """Each problem is found before the model (missing here) would be loaded; no input is ever overwritten."""
    (tmp_path / "a_file").write_text("keep me")
    previous = tmp_path / "previous"
    previous.mkdir()
    sf.write(previous / "conversation.wav", np.zeros((4000, 2), np.float32), 24_000)
    (previous / "conversation.wav.link").symlink_to(previous / "conversation.wav")
    before = _files(tmp_path)
    cases = [
        (["-o", str(tmp_path / "a_file")], "exists and is not a folder"),
        (["-o", str(tmp_path / "a_file" / "sub")], "is a file"),
        (["-o", str(previous), "-i", str(previous / "conversation.wav")], "refusing to overwrite an input"),
        (["-o", str(previous), "-i", str(previous / "conversation.wav.link")], "refusing to overwrite an input"),
        (["-o", ""], "empty path"),
        (["-i", str(tmp_path / "a_file"), "-o", str(tmp_path / "new")], "a_file"),
        (["-i", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "new")], "missing.wav"),
        (["--device", "tpu", "-o", str(tmp_path / "new")], "--device"),
    ]
    for extra, message in cases:
        code = cli.main(["demo", *FAST, *extra])
        err = capsys.readouterr().err
        assert code in (1, 2) and err.startswith("error:") and message in err and "Traceback" not in err, (extra, err)
        assert "bundled model" not in err, extra  # refused before the model
    assert _files(tmp_path) == before
    for bad in ("-1", "1e9", "nan", "x"):
        with pytest.raises(SystemExit) as exc:
            cli.main(["demo", "--answer-seconds", bad])
        assert exc.value.code == 2, bad
        assert capsys.readouterr().err.startswith("error: argument --answer-seconds"), bad


def test_demo_with_another_recording_and_the_same_folder_twice(bundled, tmp_path, capsys):
    """A recording without a sidecar .txt is named, not quoted; a second run replaces the demo's own outputs."""
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "mine.wav", 0.1 * rng.standard_normal((8_000, 2)).astype(np.float32), 16_000)
    argv = ["demo", *FAST, "-i", str(tmp_path / "mine.wav"), "-o", str(tmp_path / "out"), "--answer-seconds", "0"]
    assert cli.main(argv) == 0
    first = _files(tmp_path / "out")
    assert cli.main([*argv, "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert out.count("You:   (mine.wav)") == 2 and out.count("--model kyutai/moshiko-pytorch-bf16") == 2
    assert sorted(_files(tmp_path / "out")) == sorted(first)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary files left
    assert os.path.getsize(tmp_path / "mine.wav") > 0
