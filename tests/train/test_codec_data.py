"""Codec training crops: shapes, loudness, augmentation, resumable draws, sources and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from openmoshi.train.codec_data import AudioCrops, CodecDataConfig, CodecDataError, held_out_clips, list_audio


def _write(folder, name: str, seconds: float, rate: int, channels: int = 1, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    data = 0.05 * rng.standard_normal((int(seconds * rate), channels)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / name, data, rate)


def test_crops_shapes_loudness_and_resume(tmp_path) -> None:
    _write(tmp_path / "a", "long.wav", 3.0, 16_000)
    _write(tmp_path / "a" / "sub", "stereo.flac", 2.0, 48_000, channels=2, seed=1)
    _write(tmp_path / "a", "short.wav", 0.2, 24_000, seed=2)
    cfg = CodecDataConfig(segment_seconds=0.5, loudness_dbfs=-20.0)
    crops = AudioCrops(tmp_path / "a", cfg, 24_000, batch_size=4, seed=3)
    assert len(crops.files) == 3
    batches = [crops.next_batch() for _ in range(3)]
    assert all(b.shape == (4, 1, 12_000) for b in batches)
    rms = batches[0].pow(2).mean(-1).sqrt().flatten().numpy()
    assert np.allclose(rms, 10 ** (-20 / 20), rtol=1e-3)  # every crop at -20 dBFS
    # Resuming at step 2 reads the same crops as the uninterrupted run.
    again = AudioCrops(tmp_path / "a", cfg, 24_000, batch_size=4, seed=3)
    again.load_state_dict({"step": 2})
    assert np.array_equal(again.next_batch().numpy(), batches[2].numpy())
    # Two ranks of 2 rows read the global batch of one process of 4.
    halves = [AudioCrops(tmp_path / "a", cfg, 24_000, batch_size=2, seed=3, rank=r, world_size=2).next_batch()
              for r in (0, 1)]
    assert np.array_equal(np.concatenate([h.numpy() for h in halves]), batches[0].numpy())
    assert not np.array_equal(halves[0].numpy(), halves[1].numpy())


def test_file_loudness_keeps_a_pause_quiet(tmp_path) -> None:
    """A conversation-like file: 1 s of speech-level signal, then 1 s of faint room noise. Per crop, a crop of the
    pause is raised to speech level (noise at -20 dBFS); per file, every crop gets the file's one gain."""
    rng = np.random.default_rng(0)
    data = np.concatenate([0.1 * rng.standard_normal(24_000), 0.001 * rng.standard_normal(24_000)])
    (tmp_path / "c").mkdir()
    sf.write(tmp_path / "c" / "conv.wav", data.astype(np.float32), 24_000)
    gain = 10 ** (-20 / 20) / float(np.sqrt(np.mean(data.astype(np.float32).astype(np.float64) ** 2)))

    def crops(scope: str) -> np.ndarray:
        cfg = CodecDataConfig(segment_seconds=0.25, loudness_dbfs=-20.0, loudness_scope=scope)
        c = AudioCrops(tmp_path / "c", cfg, 24_000, batch_size=16, seed=1)
        return c.next_batch()[:, 0].numpy().astype(np.float64)

    per_crop, per_file = crops("crop"), crops("file")
    quiet = np.sqrt((per_file ** 2).mean(-1)) < 0.02  # crops of the pause, per file
    assert 0 < quiet.sum() < 16
    assert np.allclose(np.sqrt((per_crop ** 2).mean(-1)), 0.1, rtol=1e-3)  # per crop: all at -20 dBFS
    assert np.allclose(np.sqrt((per_file[quiet] ** 2).mean(-1)), 0.001 * gain, rtol=0.3)  # the pause stays quiet
    with pytest.raises(ValueError, match="loudness_scope"):
        CodecDataConfig(loudness_scope="track")


def test_augmentation_gain_noise_and_no_clipping(tmp_path) -> None:
    _write(tmp_path, "x.wav", 1.0, 24_000)
    plain = AudioCrops(tmp_path, CodecDataConfig(segment_seconds=0.5, loudness_dbfs=None), 24_000, 2, seed=0)
    loud = AudioCrops(tmp_path, CodecDataConfig(segment_seconds=0.5, loudness_dbfs=None, gain_db=(40.0, 40.0)),
                      24_000, 2, seed=0)
    a, b = plain.next_batch(), loud.next_batch()
    assert float(b.abs().max()) <= 0.99 + 1e-6 and float(b.abs().max()) > float(a.abs().max())
    noisy = AudioCrops(tmp_path, CodecDataConfig(segment_seconds=0.5, loudness_dbfs=None, noise_prob=1.0,
                                                 noise_snr_db=(0.0, 0.0)), 24_000, 2, seed=0)
    n = noisy.next_batch()
    assert not np.allclose(n.numpy(), a.numpy())


def test_manifest_source_and_errors(tmp_path) -> None:
    _write(tmp_path / "audio", "one.wav", 1.0, 24_000)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "audio/one.wav", "duration": 1.0}) + "\n\n")
    assert list_audio(manifest) == [tmp_path / "audio" / "one.wav"]
    assert AudioCrops(manifest, CodecDataConfig(segment_seconds=0.1), 24_000, 1).next_batch().shape == (1, 1, 2400)
    clips = held_out_clips(tmp_path / "audio", 2, 0.25, 24_000)
    assert [name for name, _ in clips] == ["one"] and len(clips[0][1]) == 6000
    with pytest.raises(CodecDataError, match="not found"):
        list_audio(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CodecDataError, match="no audio files"):
        list_audio(tmp_path / "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(CodecDataError, match="bad.jsonl:1"):
        list_audio(bad)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(CodecDataError, match="cannot read"):
        AudioCrops(tmp_path / "junk", CodecDataConfig(), 24_000, 1)
    with pytest.raises(ValueError, match="segment_seconds"):
        CodecDataConfig(segment_seconds=0)
    with pytest.raises(ValueError, match="gain_db"):
        CodecDataConfig(gain_db=(3.0, -3.0))
