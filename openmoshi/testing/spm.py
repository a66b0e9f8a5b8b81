"""A tiny SentencePiece model with Moshi's special ids, trained on the fly (LM, runtime and command tests)."""

from __future__ import annotations

from pathlib import Path

import sentencepiece

CORPUS = """Hello there, how are you doing today?
I am fine, thank you very much for asking.
The weather is lovely and the birds are singing.
Moshi is a speech text foundation model for real time dialogue.
We talk about music, science, cooking and travel.
Numbers like 12345 are split into digits.
""" * 20


def train_tiny_spm(folder: Path, name: str = "tokenizer_spm_32k_3", vocab_size: int = 320) -> Path:
    """Train a byte-fallback SentencePiece model with Moshi's special ids (unk 0 = EPAD, pad 3 = PAD)."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS + "café naïve\n")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / name), vocab_size=vocab_size, byte_fallback=True,
        split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2,
    )
    corpus.unlink()
    (folder / f"{name}.vocab").unlink()
    return folder / f"{name}.model"
