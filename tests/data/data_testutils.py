"""Tiny datasets and a tiny model folder (Mimi + tokenizer + config.json) for the data tests, moshi-free.

The tiny Mimi runs at 400 Hz with 32-sample frames, so its frame rate is Moshi's 12.5 Hz: word times in
seconds land on the same frames as with the real Mimi, and a few seconds of audio are a few dozen samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from openmoshi.lm.config import DEFAULT_MIMI_NAME, DEFAULT_TOKENIZER_NAME
from openmoshi.testing.kyutai import MIMI_OVERRIDES, kyutai_kwargs, tiny_lm_config
from openmoshi.testing.mimi_init import randomize_model
from openmoshi.testing.spm import train_tiny_spm

TINY_RATE = 400  # Hz: 32-sample frames at 12.5 Hz
MIMI = {**MIMI_OVERRIDES, "sample_rate": TINY_RATE}


def tiny_model_folder(folder: Path, seed: int = 0, mimi_overrides: dict | None = None) -> Path:
    """config.json (tiny LM sizes, our "mimi" override), a random tiny Mimi and a tiny SentencePiece model; no
    LM weights (preparing data never loads the LM)."""
    from safetensors.torch import save_file

    from openmoshi.codec.mimi import Mimi
    from openmoshi.codec.presets import mimi_config_from_overrides

    folder.mkdir(parents=True, exist_ok=True)
    overrides = MIMI if mimi_overrides is None else mimi_overrides
    cfg = tiny_lm_config()
    torch.manual_seed(seed)
    mimi = randomize_model(Mimi(mimi_config_from_overrides(overrides)), seed)
    save_file({k: v.detach().contiguous().clone() for k, v in mimi.state_dict().items()},
              str(folder / DEFAULT_MIMI_NAME))
    spm = train_tiny_spm(folder / "spm_tmp", vocab_size=cfg.text_card)
    spm.rename(folder / DEFAULT_TOKENIZER_NAME)
    (folder / "spm_tmp").rmdir()
    (folder / "config.json").write_text(json.dumps({**kyutai_kwargs(cfg), "mimi": overrides}))
    return folder


def write_wav(path: Path, seconds: float, channels: int = 2, rate: int = 8000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((int(round(seconds * rate)), channels)) * 0.1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data[:, 0] if channels == 1 else data, rate, subtype="PCM_16")
    return path


def write_conversation(folder: Path, name: str, seconds: float, words: list, channels: int = 2, rate: int = 8000,
                       seed: int = 0) -> dict:
    """A wav and its sidecar; returns its manifest line (path relative to `folder`)."""
    write_wav(folder / f"{name}.wav", seconds, channels, rate, seed)
    (folder / f"{name}.json").write_text(json.dumps({"alignments": words}))
    return {"path": f"{name}.wav", "duration": seconds}


def write_manifest(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


WORDS_A = [["hello", [0.1, 0.4], "SPEAKER_MAIN"], ["there", [0.5, 0.8], "SPEAKER_MAIN"],
           ["how", [0.9, 1.1], "SPEAKER_USER"], ["are", [1.2, 1.3], "SPEAKER_USER"],
           ["music", [1.6, 2.0], "SPEAKER_MAIN"]]


def small_dataset(folder: Path, n: int = 5, text: bool = False) -> Path:
    """`n` conversations of 1.5..3.5 s (one mono), optionally a text file; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        seconds = 1.5 + 0.5 * i
        words = [w for w in WORDS_A if w[1][1] <= seconds]
        lines.append(write_conversation(folder, f"conv{i}", seconds, words, channels=1 if i == 2 else 2,
                                        rate=(8000, 16000, 24000)[i % 3], seed=i))
    if text:
        (folder / "books.txt").write_text("The weather is lovely and the birds are singing.\n\nWe talk about "
                                          "music, science, cooking and travel.\n" * 3)
        lines.append({"path": "books.txt"})
    return write_manifest(folder / "data.jsonl", lines)
