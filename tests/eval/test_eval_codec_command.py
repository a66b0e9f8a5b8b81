"""`openmoshi eval codec` on a tiny random Mimi: the report, its figures and plots, and the user's mistakes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from openmoshi.cli import main as cli_main
from openmoshi.codec.mimi import Mimi, MimiConfig

SENTENCE = "The quick brown fox jumps over the lazy dog."


def _weights(folder: Path) -> Path:
    torch.manual_seed(0)
    mimi = Mimi(MimiConfig.tiny())
    mimi.init_weights()
    path = folder / "tiny.safetensors"
    save_file(mimi.state_dict(), str(path))
    return path


def _speech(folder: Path) -> Path:
    """A spoken sentence (espeak-ng when installed, as scripts/test.sh does; else the bundled example's start)."""
    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / "fox.wav"
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(wav), SENTENCE], check=True, capture_output=True)
        (folder / "fox.txt").write_text(SENTENCE + "\n")
    else:
        audio, rate = sf.read("openmoshi/assets/example.wav", dtype="float32")
        sf.write(wav, audio[:3 * rate], rate)
    return wav


def test_report_on_a_tiny_mimi(tmp_path, capsys) -> None:
    weights = _weights(tmp_path)
    _speech(tmp_path / "audio")
    out = tmp_path / "report"
    code = cli_main(["eval", "codec", str(tmp_path / "audio"), "--out", str(out), "--weights", str(weights),
                     "--preset", "tiny", "-k", "1,4", "--threads", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    for name in ("report.md", "metrics.json", "quality_vs_bitrate.png", "spectrogram.png",
                 "samples/fox_original.wav", "samples/fox_k1.wav", "samples/fox_k4.wav"):
        assert (out / name).is_file(), name
    for png in ("quality_vs_bitrate.png", "spectrogram.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figures = json.loads((out / "metrics.json").read_text())
    summary = {s["num_codebooks"]: s for s in figures["summary"]}
    assert set(summary) == {1, 4}
    assert summary[1]["bitrate"] == 1 * 6 * 500 and summary[4]["bitrate"] == 4 * 6 * 500  # 64 entries, 500 Hz
    clip = figures["clips"][0]
    assert clip["name"] == "fox.wav" and clip["original_transcript"]
    for k in ("1", "4"):
        scores = clip["by_k"][k]
        assert scores["mel_distance"] > 1.0  # a random codec is far from the original
        assert scores["si_sdr"] < 0
        assert 0 <= scores["stoi"] <= 1
        assert scores["wer"] is not None and scores["transcript"] is not None
    # The recogniser understands the original far better than the random codec's output.
    floor = 0.0 if clip["reference_source"] == "recogniser" else figures["original_wer"]
    assert floor < 0.5 <= min(summary[1]["wer"], summary[4]["wer"])
    recon, rate = sf.read(out / "samples" / "fox_k4.wav")
    original, _ = sf.read(out / "samples" / "fox_original.wav")
    assert rate == 24_000 and len(recon) == len(original)
    report = (out / "report.md").read_text()
    assert "| 4 | 12.000 |" in report and "quality_vs_bitrate.png" in report and "spectrogram.png" in report
    assert "K= 4 (12.00 kbps)" in capsys.readouterr().out


def test_user_mistakes_are_clear_errors(tmp_path, capsys) -> None:
    weights = _weights(tmp_path)
    audio = tmp_path / "audio"
    _speech(audio)
    base = ["eval", "codec", "--weights", str(weights), "--preset", "tiny", "--no-wer", "--no-progress"]

    def run(*extra: str) -> str:
        assert cli_main([*base, *extra]) == 1
        return capsys.readouterr().err

    assert "not found" in run(str(tmp_path / "nope"), "--out", str(tmp_path / "r"))
    (tmp_path / "empty").mkdir()
    assert "no audio files" in run(str(tmp_path / "empty"), "--out", str(tmp_path / "r"))
    assert "inside the audio folder" in run(str(audio), "--out", str(audio / "report"))
    assert "not in 1..8" in run(str(audio), "--out", str(tmp_path / "r"), "-k", "9")
    wrong_size = ["eval", "codec", str(audio), "--out", str(tmp_path / "r"), "--weights", str(weights), "--no-wer"]
    assert cli_main(wrong_size) == 1 and "is --preset right?" in capsys.readouterr().err  # default preset: mimi
    (tmp_path / "file").write_text("x")
    assert "not a folder" in run(str(audio), "--out", str(tmp_path / "file"))
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    assert "cannot read" in run(str(tmp_path / "bad.wav"), "--out", str(tmp_path / "r"))
    with pytest.raises(SystemExit):
        cli_main([*base, str(audio), "--out", str(tmp_path / "r"), "-k", "0"])
    assert not (tmp_path / "r").exists()  # nothing written on error
    # Without the recogniser: the figures, no WER.
    assert cli_main([*base, str(audio), "--out", str(tmp_path / "r"), "-k", "2"]) == 0
    figures = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert figures["summary"][0]["wer"] is None and np.isfinite(figures["summary"][0]["means"]["mel_distance"])


def test_model_folder_of_an_export(tmp_path, capsys) -> None:
    """--model FOLDER: an export of ours (Kyutai's names, config.json with the Mimi config)."""
    from openmoshi.train.codec_export import export_codec

    torch.manual_seed(1)
    mimi = Mimi(MimiConfig.tiny())
    mimi.init_weights()
    export_codec(tmp_path / "export", mimi.state_dict(), mimi.cfg)
    audio = tmp_path / "audio"
    _speech(audio)
    out = tmp_path / "r"
    assert cli_main(["eval", "codec", str(audio), "--out", str(out), "--model", str(tmp_path / "export"),
                     "--no-wer", "--no-progress", "--threads", "1"]) == 0, capsys.readouterr().err
    figures = json.loads((out / "metrics.json").read_text())
    assert [s["num_codebooks"] for s in figures["summary"]] == [1, 2, 4, 8]  # default: powers of 2 up to all
    assert "export" in figures["model"]
