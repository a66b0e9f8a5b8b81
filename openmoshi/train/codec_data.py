"""Codec training data: random crops of audio files, mono at the codec's rate, loudness-normalised, augmented.

Source: a folder of audio files (recursively) or a JSONL manifest (`{"path": ..., "duration": ...}` per line,
paths relative to the manifest's folder; the shared dataset format). Each batch row is a crop of
`segment_seconds` from a file drawn with probability proportional to its duration, at a uniformly random start
(files shorter than a crop are zero-padded), channels mixed down, resampled (soxr), then:
- loudness: the crop's RMS set to `loudness_dbfs` (None: off; near-silent crops are left as they are), or with
  `loudness_scope: file` the gain that sets the whole file's RMS (a pause in a conversation stays quiet);
- augmentation: a random gain in `gain_db` (dB) and, with probability `noise_prob`, white noise at a random SNR
  in `noise_snr_db`; the result is scaled down if it would clip.

Row i of the global batch at step s is drawn from its own generator seeded (seed, s, i), and each rank reads
its own rows of that global batch: the crops do not depend on the number of processes (a global batch split
over ranks is the batch of one process), and `state_dict()` is the step count alone (a resumed run reads the
same crops as an uninterrupted one). Only the crop is read from disk (soundfile seeks), so long files
cost nothing extra; with `loudness_scope: file`, each file is also read whole once, for its RMS (then cached).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")


class CodecDataError(ValueError):
    """Training audio that cannot be used; the message names the file and the problem."""


@dataclass
class CodecDataConfig:
    segment_seconds: float = 12.0  # Mimi: 12 s windows
    loudness_dbfs: float | None = -24.0  # RMS level of each crop; None: as recorded
    # "crop": each crop's own RMS is set (Mimi's recipe, for speech-dense audio); "file": the gain that sets the
    # whole file's RMS, so a crop of a conversation's pause stays a pause instead of noise raised to speech level
    loudness_scope: str = "crop"
    gain_db: tuple[float, float] = (0.0, 0.0)  # random gain range (after the normalisation)
    noise_prob: float = 0.0  # share of crops with added white noise
    noise_snr_db: tuple[float, float] = (20.0, 40.0)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.segment_seconds) and self.segment_seconds > 0):
            raise ValueError(f"data.segment_seconds must be > 0, got {self.segment_seconds}")
        if self.loudness_scope not in ("crop", "file"):
            raise ValueError(f"data.loudness_scope must be 'crop' or 'file', got {self.loudness_scope!r}")
        if not 0 <= self.noise_prob <= 1:
            raise ValueError(f"data.noise_prob must be in [0, 1], got {self.noise_prob}")
        for name in ("gain_db", "noise_snr_db"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"data.{name} must be [low, high] with low <= high, got {[lo, hi]}")


def _info(path: Path) -> tuple[int, int]:
    """(frames, sample rate) of an audio file, or CodecDataError."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise CodecDataError(f"cannot read {path} as audio ({e})") from None
    if info.frames <= 0:
        raise CodecDataError(f"{path} contains no audio samples")
    return int(info.frames), int(info.samplerate)


def list_audio(source: str | Path) -> list[Path]:
    """The audio files of a folder (recursive, sorted), of a JSONL manifest, or a single file."""
    source = Path(source).expanduser()
    if not source.exists():
        raise CodecDataError(f"training audio not found: {source}")
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise CodecDataError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {source}")
        return files
    if source.suffix.lower() != ".jsonl":
        return [source]
    files = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            path = Path(entry["path"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CodecDataError(f"{source}:{number}: expected {{\"path\": ..., \"duration\": ...}} ({e})") from None
        files.append(path if path.is_absolute() else source.parent / path)
    if not files:
        raise CodecDataError(f"{source} lists no audio files")
    return files


class AudioCrops:
    """This rank's batches [B, 1, T] of random crops (T = segment_seconds * sample_rate), endlessly; `batch_size`
    is the per-rank batch (the global batch is batch_size * world_size)."""

    def __init__(self, source: str | Path, cfg: CodecDataConfig, sample_rate: int, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.cfg, self.sample_rate, self.batch_size = cfg, sample_rate, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.files = list_audio(source)
        infos = [_info(p) for p in self.files]
        self.frames = np.array([f for f, _ in infos])
        self.rates = np.array([r for _, r in infos])
        seconds = self.frames / self.rates
        self.weights = seconds / seconds.sum()
        self.length = int(round(cfg.segment_seconds * sample_rate))
        self.step = 0
        self._file_rms: dict[int, float] = {}  # loudness_scope "file": each file's RMS (mixed down), when first read

    def _read(self, i: int, start: int = 0, frames: int = -1) -> np.ndarray:
        """File i's samples [start, start + frames) mixed down to mono (frames -1: to the end)."""
        import soundfile as sf

        try:
            data, _ = sf.read(str(self.files[i]), start=start, frames=frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise CodecDataError(f"cannot read {self.files[i]} ({e})") from None
        return data.mean(axis=1)

    def _rms_of_file(self, i: int) -> float:
        if i not in self._file_rms:
            self._file_rms[i] = float(np.sqrt(np.mean(self._read(i).astype(np.float64) ** 2)))
        return self._file_rms[i]

    def _crop(self, rng: np.random.Generator) -> np.ndarray:
        from ..audio import resample

        i = int(rng.choice(len(self.files), p=self.weights))
        rate, total = int(self.rates[i]), int(self.frames[i])
        need = int(math.ceil(self.cfg.segment_seconds * rate))
        start = int(rng.integers(0, max(total - need, 0) + 1))
        audio = resample(self._read(i, start, min(need, total)), rate, self.sample_rate)[:self.length]
        audio = np.pad(audio, (0, self.length - len(audio)))
        return self._augment(audio, rng, self._rms_of_file(i) if self.cfg.loudness_scope == "file" else None)

    def _augment(self, audio: np.ndarray, rng: np.random.Generator, rms: float | None = None) -> np.ndarray:
        """Loudness (to `rms`, the file's, when given; else the crop's own), gain, noise, peak limit."""
        cfg = self.cfg
        if rms is None:
            rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        if cfg.loudness_dbfs is not None and rms > 1e-4:
            audio = audio * (10 ** (cfg.loudness_dbfs / 20) / rms)
        audio = audio * 10 ** (rng.uniform(*cfg.gain_db) / 20)
        if cfg.noise_prob > 0 and rng.random() < cfg.noise_prob:
            level = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) or 1e-3
            snr = rng.uniform(*cfg.noise_snr_db)
            audio = audio + rng.standard_normal(len(audio)) * level * 10 ** (-snr / 20)
        peak = float(np.abs(audio).max())
        if peak > 0.99:
            audio = audio * (0.99 / peak)
        return audio.astype(np.float32)

    def batch_at(self, step: int) -> Tensor:
        """This rank's rows [B, 1, T] of the global batch of `step`: a pure function of the step (the counter is
        not touched), so a batch can be read ahead in another thread."""
        first = self.rank * self.batch_size
        rows = [self._crop(np.random.default_rng([self.seed, step, first + i])) for i in range(self.batch_size)]
        return torch.from_numpy(np.stack(rows))[:, None]

    def next_batch(self) -> Tensor:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def __iter__(self) -> Iterator[Tensor]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])


def held_out_clips(source: str | Path, count: int, seconds: float, sample_rate: int) -> list[tuple[str, np.ndarray]]:
    """The first `seconds` of the first `count` files (name, mono audio at `sample_rate`): fixed clips whose
    reconstructions a trainer saves every N steps."""
    from ..audio import read_audio

    out = []
    for path in list_audio(source)[:count]:
        audio = read_audio(path, sample_rate)[:int(seconds * sample_rate)]
        out.append((path.stem, audio))
    return out
