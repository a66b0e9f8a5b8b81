"""`openmoshi codec encode|decode|demo` with tiny random weights saved to a temp file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from openmoshi import cli
from openmoshi.codec.mimi import Mimi, MimiConfig

sys.path.insert(0, str(Path(__file__).parents[1] / "codec"))
from codec_testutils import randomize_model  # noqa: E402

FRAME = MimiConfig.tiny().frame_size


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    model = randomize_model(Mimi(MimiConfig.tiny()), seed=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def _run(*argv: str | Path) -> int:
    return cli.main([str(a) for a in argv])


def _codec(action: str, weights: Path, *rest: str | Path) -> int:
    return _run("codec", action, "--weights", weights, "--preset", "tiny", *rest)


def test_encode_decode_round_trip_any_rate_stereo(tmp_path: Path, weights: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    gen = np.random.default_rng(0)
    stereo = (0.1 * gen.standard_normal((4000, 2))).astype(np.float32)  # 0.25 s at 16 kHz
    sf.write(tmp_path / "in.wav", stereo, 16000)
    assert _codec("encode", weights, "-k", "3", tmp_path / "in.wav", tmp_path / "c.npz") == 0
    assert "mixing them down to mono" in caplog.text
    data = np.load(tmp_path / "c.npz")
    assert int(data["num_samples"]) == 6000
    assert data["codes"].shape == (3, -(-6000 // FRAME)) and np.issubdtype(data["codes"].dtype, np.integer)
    assert _codec("encode", weights, "--streaming", "-k", "3", tmp_path / "in.wav", tmp_path / "s.npz") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["codes"], data["codes"])  # same in both modes
    assert _codec("decode", weights, tmp_path / "c.npz", tmp_path / "out.wav") == 0
    out, rate = sf.read(tmp_path / "out.wav")
    assert rate == 24000 and out.shape == (6000,)  # trimmed to num_samples
    # Decoding equals the model's own decode of the same codes (16-bit wav rounding aside).
    model = randomize_model(Mimi(MimiConfig.tiny()), seed=0).eval()
    ref = model.decode(torch.from_numpy(data["codes"].astype(np.int64))[None])[0, 0, :6000].numpy()
    assert np.abs(np.clip(ref, -1, 1) - out).max() < 1e-3


def test_long_input_is_chunked_identically(tmp_path: Path, weights: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from openmoshi.commands import codec

    sf.write(tmp_path / "in.wav", 0.1 * np.random.default_rng(1).standard_normal(40 * FRAME + 5), 24000)
    assert _codec("encode", weights, tmp_path / "in.wav", tmp_path / "a.npz") == 0
    monkeypatch.setattr(codec, "MAX_BATCH_FRAMES", 3)
    monkeypatch.setattr(codec, "CHUNK_FRAMES", 7)
    monkeypatch.setattr(codec, "PROGRESS_FRAMES", 1)
    assert _codec("encode", weights, tmp_path / "in.wav", tmp_path / "b.npz") == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(a["codes"], b["codes"])
    assert _codec("decode", weights, tmp_path / "b.npz", tmp_path / "b.wav") == 0
    monkeypatch.setattr(codec, "MAX_BATCH_FRAMES", 1000)
    assert _codec("decode", weights, tmp_path / "b.npz", tmp_path / "a.wav") == 0
    np.testing.assert_allclose(sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0], atol=1e-4)


def test_clear_errors(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture) -> None:
    sf.write(tmp_path / "ok.wav", np.zeros(100, dtype=np.float32), 24000)
    assert _codec("encode", weights, tmp_path / "missing.wav", tmp_path / "x.npz") == 1
    assert "not found" in capsys.readouterr().err
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 24000)
    assert _codec("encode", weights, tmp_path / "empty.wav", tmp_path / "x.npz") == 1
    assert "no audio samples" in capsys.readouterr().err
    assert _codec("encode", weights, "-k", "99", tmp_path / "ok.wav", tmp_path / "x.npz") == 1
    assert "--num-codebooks" in capsys.readouterr().err
    assert _run("codec", "encode", "--weights", tmp_path / "nope.safetensors", tmp_path / "ok.wav",
                tmp_path / "x.npz") == 1
    assert "weights file not found" in capsys.readouterr().err
    # Tiny weights into the real-size model: refused with the list of problems.
    assert _run("codec", "encode", "--weights", weights, tmp_path / "ok.wav", tmp_path / "x.npz") == 1
    assert "mis-shaped" in capsys.readouterr().err  # the shared engine's label
    np.savez(tmp_path / "bad.npz", codes=np.full((2, 3), 5000))
    assert _codec("decode", weights, tmp_path / "bad.npz", tmp_path / "x.wav") == 1
    assert "codes must be in 0..63" in capsys.readouterr().err
    np.savez(tmp_path / "bad2.npz", other=np.zeros(3))
    assert _codec("decode", weights, tmp_path / "bad2.npz", tmp_path / "x.wav") == 1
    assert "no `codes` array" in capsys.readouterr().err
    np.savez(tmp_path / "bad3.npz", codes=np.zeros((2, 3, 4), dtype=np.int64))
    assert _codec("decode", weights, tmp_path / "bad3.npz", tmp_path / "x.wav") == 1
    assert "[K, F]" in capsys.readouterr().err


def test_demo_with_local_weights(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "rt.wav"
    # The tiny preset's frames are 2 ms: a 0.3 s cut of the bundled example keeps the test short.
    from openmoshi.audio import example_recording, read_audio

    sf.write(tmp_path / "cut.wav", read_audio(example_recording())[24000:31200], 24000)
    assert _run("codec", "demo", "--weights", weights, "--preset", "tiny", "-i", tmp_path / "cut.wav", "-o", out) == 0
    printed = capsys.readouterr().out
    info = sf.info(out)
    assert info.samplerate == 24000 and info.frames == 7200
    assert f"[8, {7200 // FRAME}]" in printed and "kbps" in printed and "ms per" in printed


def test_demo_offline_says_how_to_provide_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache" / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty_cache" / "hub"))
    assert _run("codec", "demo", "-o", tmp_path / "x.wav") == 1
    err = capsys.readouterr().err
    assert "--weights" in err and "tokenizer-e351c8d8-checkpoint125.safetensors" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.wav").exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_never_replaces_an_input(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture) -> None:
    rec = tmp_path / "rec.wav"
    sf.write(rec, 0.1 * np.random.default_rng(2).standard_normal(10 * FRAME), 24000)
    assert _codec("encode", weights, rec, tmp_path / "c.npz") == 0
    os.link(rec, tmp_path / "hard.wav")
    (tmp_path / "sym.npz").symlink_to(tmp_path / "c.npz")
    before = _snapshot(tmp_path)
    tiny = ["--weights", weights, "--preset", "tiny"]
    for argv in (["codec", "demo", *tiny, "-i", rec, "-o", rec],
                 ["codec", "demo", *tiny, "-i", rec, "-o", tmp_path / "hard.wav"],
                 ["codec", "decode", *tiny, tmp_path / "c.npz", tmp_path / "c.npz"],
                 ["codec", "encode", *tiny, tmp_path / "c.npz", tmp_path / "sym.npz"],
                 ["codec", "decode", *tiny, tmp_path / "c.npz", weights]):
        assert _run(*argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and ("refusing to overwrite" in err or "must end in" in err), err
    assert _snapshot(tmp_path) == before  # every input byte for byte, and nothing new


def test_outputs_checked_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A missing weights file would be the next error: the output problem must be found first."""
    sf.write(tmp_path / "ok.wav", np.zeros(100, dtype=np.float32), 24000)
    (tmp_path / "folder.npz").mkdir()
    missing = tmp_path / "missing.safetensors"
    cases = [
        (["codec", "encode", tmp_path / "ok.wav", tmp_path / "c.wav"], "must end in .npz"),
        (["codec", "encode", tmp_path / "ok.wav", tmp_path / "folder.npz"], "is a folder"),
        (["codec", "encode", tmp_path / "ok.wav", tmp_path / "ok.wav" / "c.npz"], "is a file"),
        (["codec", "encode", "-k", "33", tmp_path / "ok.wav", tmp_path / "c.npz"], "--num-codebooks must be in 1..32"),
        (["codec", "decode", tmp_path / "c.npz", tmp_path / "c.mp3"], "must end in .wav"),
        (["codec", "demo", "-i", tmp_path / "ok.wav", "-o", tmp_path], "is a folder"),
        (["codec", "demo", "-i", tmp_path / "ok.wav", "-o", tmp_path / "x.npz"], "must end in .wav"),
        (["codec", "demo", "-i", tmp_path / "ok.wav", "-o", tmp_path / "x.wav", "-k", "0"], "--num-codebooks"),
    ]
    for argv, message in cases:
        assert _run(*argv, "--weights", missing) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.npz", "ok.wav"]


def test_bad_codes_files(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture) -> None:
    """Every odd .npz is refused with a message naming the problem, before the model loads, never a traceback
    nor advice to allow pickles."""
    good = {"codes": np.zeros((2, 3), np.int32), "num_samples": np.int64(3 * FRAME)}
    np.savez(tmp_path / "good.npz", **good)
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.npz").write_text("hello")
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "single.npy", good["codes"])
    np.savez(tmp_path / "objects.npz", codes=np.array([[1, None]], dtype=object))
    cases = {"truncated.npz": "damaged or truncated", "text.npz": "not an .npz", "empty.npz": "not an .npz",
             "single.npy": "single .npy array", "objects.npz": "Python objects", "missing.npz": "not found"}
    for name, (key, value, message) in {
        "ns_array.npz": ("num_samples", np.array([5, 6]), "`num_samples` must be one integer"),
        "ns_float.npz": ("num_samples", np.float64(5.5), "`num_samples` must be one integer"),
        "ns_neg.npz": ("num_samples", np.int64(-5), "num_samples -5 does not fit"),
        "ns_zero.npz": ("num_samples", np.int64(0), "num_samples 0 does not fit"),
        "ns_long.npz": ("num_samples", np.int64(3 * FRAME + 1), f"3 frames hold 1..{3 * FRAME} samples"),
        "rate.npz": ("sample_rate", np.int64(16000), "16000 Hz"),
        "float.npz": ("codes", np.zeros((2, 3)), "integer array [K, F]"),
        "no_frames.npz": ("codes", np.zeros((2, 0), np.int32), "no frames"),
    }.items():
        np.savez(tmp_path / name, **{**good, key: value})
        cases[name] = message
    for name, message in cases.items():
        assert _run("codec", "decode", "--weights", tmp_path / "no.safetensors", "--preset", "tiny",
                    tmp_path / name, tmp_path / "out.wav") == 1, name
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and "allow_pickle" not in err, (name, err)
    assert not (tmp_path / "out.wav").exists()
    assert _codec("decode", weights, tmp_path / "good.npz", tmp_path / "out.wav") == 0  # the control


def test_encode_writes_exactly_the_named_file(tmp_path: Path, weights: Path) -> None:
    sf.write(tmp_path / "in.wav", np.zeros(5 * FRAME, dtype=np.float32), 24000)
    assert _codec("encode", weights, tmp_path / "in.wav", tmp_path / "sub" / "c.NPZ") == 0  # folder created
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["c.NPZ"]  # no c.NPZ.npz, no temp file


def test_demo_shows_progress(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture) -> None:
    sf.write(tmp_path / "in.wav", np.zeros(6 * FRAME, dtype=np.float32), 24000)
    assert _run("codec", "demo", "--weights", weights, "--preset", "tiny", "-i", tmp_path / "in.wav",
                "-o", tmp_path / "o.wav", "--threads", "1") == 0
    err = capsys.readouterr().err
    assert "demo" in err and "6/6" in err  # the bar reached every frame
