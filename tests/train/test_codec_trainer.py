"""`openmoshi train codec` on the tiny preset: the run folder, metrics, samples, checkpoints, the export (loaded
by our codec command), an exact resume, and the user's mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import load_file

from openmoshi.cli import main as cli_main
from openmoshi.train.codec_export import ENCODER_SIDE, codes_differ

FAST = ["--set", "data.segment_seconds=0.1", "--set", "loss.phases.adversarial_start=2", "--set", "train.batch_size=2",
        "--set", "data.held_out_seconds=0.2", "--set", "train.log_every=2", "--set", "train.val_every=4",
        "--set", "train.checkpoint_every=2", "--threads", "1", "--no-progress"]


def _audio(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    audio, rate = sf.read("openmoshi/assets/example.wav", dtype="float32")
    sf.write(folder / "a.wav", audio[:2 * rate], rate)
    sf.write(folder / "b.flac", audio[2 * rate:4 * rate], rate)
    return folder


def test_tiny_run_folder_and_export(tmp_path, capsys) -> None:
    data = _audio(tmp_path / "audio")
    run = tmp_path / "run"
    assert cli_main(["train", "codec", "tiny", "--data", str(data), "--out", str(run), "--steps", "4", *FAST]) == 0
    assert "codec in" in capsys.readouterr().out
    for name in ("config.yaml", "metrics.jsonl", "loss.png", "checkpoints/step_00000004/meta.json",
                 "export/mimi.safetensors", "export/config.json", "samples/step_00000004/a.wav"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    for key in ("mel", "commitment", "discriminator", "perplexity", "dead_codes", "audio_s_per_s"):
        assert all(np.isfinite(r[key]) for r in train), key
    # The generator listens to the discriminator from step 2 (0-based) on: the second window only.
    assert "adversarial" not in train[0] and np.isfinite(train[1]["adversarial"] + train[1]["feature_matching"])
    assert [r["step"] for r in records if r["split"] == "val"] == [4]
    sample, rate = sf.read(run / "samples" / "step_00000004" / "a.wav")
    assert rate == 24_000 and len(sample) == 2 * int(0.2 * 24_000) + 24_000 // 4  # original, gap, reconstruction
    weights = load_file(run / "export" / "mimi.safetensors")
    assert "quantizer.rvq_first.vq.layers.0._codebook.embedding_sum" in weights  # Kyutai's names
    # The export is a codec our commands load.
    out = tmp_path / "codes.npz"
    assert cli_main(["codec", "encode", str(data / "a.wav"), str(out), "--weights",
                     str(run / "export" / "mimi.safetensors"), "--preset", "tiny", "-k", "8"]) == 0
    assert np.load(out)["codes"].shape[0] == 8


def test_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    data = _audio(tmp_path / "audio")
    base = ["train", "codec", "tiny", "--data", str(data), *FAST, "--set", "train.val_every=0"]
    assert cli_main([*base, "--out", str(tmp_path / "full"), "--steps", "4"]) == 0
    assert cli_main([*base, "--out", str(tmp_path / "part"), "--steps", "2"]) == 0
    assert cli_main(["train", "codec", "--resume", "--out", str(tmp_path / "part"), "--steps", "4",
                     "--threads", "1", "--no-progress"]) == 0
    full = load_file(tmp_path / "full" / "export" / "mimi.safetensors")
    part = load_file(tmp_path / "part" / "export" / "mimi.safetensors")
    assert full.keys() == part.keys()
    for k in full:
        torch.testing.assert_close(part[k], full[k], atol=1e-6, rtol=1e-5, msg=k)
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]


def test_encoder_frozen_from_keeps_the_codes_and_trains_the_decoder(tmp_path) -> None:
    data = _audio(tmp_path / "audio")
    base = ["train", "codec", "tiny", "--data", str(data), *FAST, "--set", "train.val_every=0",
            "--set", "loss.phases.encoder_frozen_from=3"]
    assert cli_main([*base, "--out", str(tmp_path / "full"), "--steps", "6"]) == 0
    frozen = load_file(tmp_path / "full" / "export-frozen" / "mimi.safetensors")
    final = load_file(tmp_path / "full" / "export" / "mimi.safetensors")
    assert frozen.keys() == final.keys()
    encoder = [k for k in final if k.startswith(ENCODER_SIDE)]
    decoder = [k for k in final if not k.startswith(ENCODER_SIDE)]
    assert encoder and decoder
    for k in encoder:  # bit for bit: the weights and the codebooks' buffers
        assert torch.equal(frozen[k], final[k]), k
    assert codes_differ(tmp_path / "full" / "export-frozen" / "mimi.safetensors",
                        tmp_path / "full" / "export" / "mimi.safetensors") == []
    assert any(not torch.equal(frozen[k], final[k]) for k in decoder)  # the decoder went on training
    codes = []
    for folder in ("export-frozen", "export"):  # so the codes are the same whichever export encodes
        out = tmp_path / f"{folder}.npz"
        assert cli_main(["codec", "encode", str(data / "a.wav"), str(out), "--weights",
                         str(tmp_path / "full" / folder / "mimi.safetensors"), "--preset", "tiny", "-k", "8"]) == 0
        codes.append(np.load(out)["codes"])
    np.testing.assert_array_equal(codes[0], codes[1])
    # Resumed across the freeze (stopped at step 2, before it): the same frozen export and the same end.
    assert cli_main([*base, "--out", str(tmp_path / "part"), "--steps", "2"]) == 0
    assert not (tmp_path / "part" / "export-frozen").exists()
    assert codes_differ(tmp_path / "full" / "export-frozen" / "mimi.safetensors",  # step 2's codes are not final
                        tmp_path / "part" / "export" / "mimi.safetensors")
    assert cli_main(["train", "codec", "--resume", "--out", str(tmp_path / "part"), "--steps", "6",
                     "--threads", "1", "--no-progress"]) == 0
    for folder in ("export-frozen", "export"):
        want = load_file(tmp_path / "full" / folder / "mimi.safetensors")
        got = load_file(tmp_path / "part" / folder / "mimi.safetensors")
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-5, msg=f"{folder}: {k}")


def test_user_mistakes(tmp_path, capsys) -> None:
    data = _audio(tmp_path / "audio")

    def err(*argv: str) -> str:
        assert cli_main(["train", "codec", *argv]) != 0
        return capsys.readouterr().err

    assert "no training audio" in err("tiny", "--out", str(tmp_path / "r"))
    assert "not found" in err("tiny", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"))
    assert "unknown config key" in err("tiny", "--data", str(data), "--set", "loss.mell=1")
    assert "loss.balancer_total_norm is now loss.balancer.total_norm" in err(
        "tiny", "--data", str(data), "--set", "loss.balancer_total_norm=2")  # a key of the old flat layout
    assert "unknown preset" in err("huge", "--data", str(data))
    assert "no such weights file" in err("tiny", "--data", str(data), "--init", str(tmp_path / "none.safetensors"))
    (tmp_path / "w.safetensors").write_bytes(b"not safetensors")
    assert "w.safetensors" in err("tiny", "--data", str(data), "--init", str(tmp_path / "w.safetensors"), "--out",
                                  str(tmp_path / "r3"))
    assert not (tmp_path / "r3").exists()
    assert "do not give" in err("tiny", "--resume", "--out", str(tmp_path / "r"))
    assert "teacher" in err("tiny", "--data", str(data), "--set", "teacher=wavlm", "--out", str(tmp_path / "r"))
    # found on the GPU check: bf16 was accepted and silently trained in fp32
    assert "fp32 only" in err("tiny", "--data", str(data), "--set", "train.precision=bf16", "--out",
                              str(tmp_path / "r"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.wav").write_bytes(b"RIFF not really")
    assert "cannot read" in err("tiny", "--data", str(tmp_path / "junk"), "--out", str(tmp_path / "r2"))
    assert not (tmp_path / "r2").exists()  # nothing left behind
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert "not empty" in err("tiny", "--data", str(data), "--out", str(tmp_path / "busy"), "--steps", "1",
                              "--threads", "1", "--no-progress")


def test_read_ahead_gives_the_batches_in_order_and_counts_only_the_consumed(tmp_path) -> None:
    import pytest

    from openmoshi.train.codec_data import AudioCrops, CodecDataConfig
    from openmoshi.train.codec_trainer import _ReadAhead

    rng = np.random.default_rng(0)
    sf.write(tmp_path / "a.wav", 0.05 * rng.standard_normal(24_000).astype(np.float32), 24_000)
    cfg = CodecDataConfig(segment_seconds=0.1)
    plain = AudioCrops(tmp_path, cfg, 24_000, batch_size=2, seed=5)
    expected = [plain.next_batch() for _ in range(4)]

    class Teacher:  # features that say which batch they came from
        def features(self, wav):
            return wav[:, ::100, None]

    data = AudioCrops(tmp_path, cfg, 24_000, batch_size=2, seed=5)
    ahead = _ReadAhead(data, Teacher(), start=1, stop=4)
    try:
        for step in (1, 2, 3):
            wav, feats = ahead.take(step)
            assert torch.equal(wav, expected[step]) and torch.equal(feats, expected[step][:, 0, ::100, None])
            assert data.state_dict() == {"step": step + 1}  # the batch read ahead is not counted
        with pytest.raises(RuntimeError, match="no batch"):
            ahead.take(4)
    finally:
        ahead.close()
