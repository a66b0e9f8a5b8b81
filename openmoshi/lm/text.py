"""The text side: a SentencePiece tokenizer wrapper with Moshi's special text ids named.

Moshi's text stream uses SentencePiece ids 0..text_card-1 plus:
- PAD (3 for moshiko): nothing is being said at this frame; EPAD (0): end of padding, a word starts next frame;
- the initial token (text_card, 32000 for moshiko): fed before the first frame, never sampled by a trained
  model;
- -1 (zero token: contributes nothing) and -2 (not generated yet) on the token grid.
The ids live in one place, `lm/config.py`: the grid markers as constants, PAD, EPAD and the initial ids in
`LMConfig` (read from config.json's `existing_text_padding_id` / `existing_text_end_padding_id`);
`TextTokenizer.for_model(path, cfg)` takes them from the config. `TEXT_PAD_ID` / `TEXT_EPAD_ID` are moshiko's
(LMConfig's defaults), for callers without a config.
Display text replaces SentencePiece's word mark (U+2581) with a space; PAD/EPAD display as nothing.
"""

from __future__ import annotations

from pathlib import Path

import sentencepiece

from .config import UNGENERATED_TOKEN_ID, ZERO_TOKEN_ID, LMConfig

__all__ = ["TEXT_PAD_ID", "TEXT_EPAD_ID", "ZERO_TOKEN_ID", "UNGENERATED_TOKEN_ID", "TokenizerError",
           "TextTokenizer", "TextStreamDecoder", "piece_to_text"]

_MOSHIKO = LMConfig.moshiko_7b()
TEXT_PAD_ID = _MOSHIKO.text_padding_id
TEXT_EPAD_ID = _MOSHIKO.text_end_padding_id
WORD_MARK = "\u2581"


class TokenizerError(ValueError):
    """A text tokenizer file that cannot be used (not a SentencePiece model, or not fitting the model)."""


def piece_to_text(piece: str) -> str:
    """A SentencePiece piece as display text: the word mark becomes a space."""
    return piece.replace(WORD_MARK, " ")


class TextTokenizer:
    """SentencePiece model with Moshi's special ids.

    `text_card` is the model's text vocabulary (the initial token id); by default the tokenizer's vocab size.
    `pad_id` / `epad_id`: the model's PAD and EPAD (moshiko's by default; `for_model` reads them from the config).
    Raises FileNotFoundError for a missing file, TokenizerError for one that cannot be used.
    """

    def __init__(self, model_file: str | Path, text_card: int | None = None, pad_id: int = TEXT_PAD_ID,
                 epad_id: int = TEXT_EPAD_ID) -> None:
        path = Path(model_file)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {path}")
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as err:  # sentencepiece's own parse errors are RuntimeErrors
            raise TokenizerError(f"{path} is not a SentencePiece model ({str(err).strip()})") from None
        self.vocab_size = int(self.sp.get_piece_size())
        self.text_card = self.vocab_size if text_card is None else int(text_card)
        self.pad_id, self.epad_id = int(pad_id), int(epad_id)
        if self.vocab_size > self.text_card:
            raise TokenizerError(
                f"tokenizer {path} has {self.vocab_size} pieces, more than the model's text_card "
                f"{self.text_card} (a tokenizer for another model?)"
            )
        for label, value in (("PAD", self.pad_id), ("EPAD", self.epad_id)):
            if not 0 <= value < self.vocab_size:
                raise TokenizerError(f"tokenizer {path} has {self.vocab_size} pieces: the model's {label} id "
                                     f"{value} is not one of them")

    @classmethod
    def for_model(cls, model_file: str | Path, cfg: LMConfig) -> TextTokenizer:
        """The tokenizer of a model: text_card, PAD and EPAD from its config."""
        return cls(model_file, text_card=cfg.text_card, pad_id=cfg.text_padding_id,
                   epad_id=cfg.text_end_padding_id)

    @property
    def initial_id(self) -> int:
        return self.text_card

    def is_special(self, token: int) -> bool:
        """PAD, EPAD, the initial token and the negative grid markers carry no text."""
        return token in (self.pad_id, self.epad_id) or token < 0 or token >= self.vocab_size

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text, out_type=int))

    def decode(self, ids: list[int]) -> str:
        """Text of a sequence of ids, skipping special ones."""
        return self.sp.decode([int(i) for i in ids if not self.is_special(int(i))])

    def piece(self, token: int) -> str:
        """The raw SentencePiece piece of `token` ('' for special ids)."""
        return "" if self.is_special(token) else self.sp.id_to_piece(int(token))

    def display(self, token: int) -> str:
        """Display text of one token: word mark -> space, PAD/EPAD/special -> ''.

        Byte-fallback pieces (<0xAB>) of single ASCII bytes are shown as the character; for multi-byte
        characters use `TextStreamDecoder`, which buffers them.
        """
        if self.is_special(token):
            return ""
        if self.sp.is_byte(int(token)):
            value = int(self.sp.id_to_piece(int(token))[3:5], 16)
            return chr(value) if value < 0x80 else ""
        return piece_to_text(self.sp.id_to_piece(int(token)))


class TextStreamDecoder:
    """Turns a stream of text tokens into display text, one token at a time, joining byte-fallback pieces."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tok = tokenizer
        self._bytes = bytearray()

    def push(self, token: int) -> str:
        """Display text produced by `token` ('' when nothing is complete yet)."""
        sp = self.tok.sp
        if self.tok.is_special(token):
            return ""
        if sp.is_byte(int(token)):
            self._bytes.append(int(sp.id_to_piece(int(token))[3:5], 16))
            try:
                text = self._bytes.decode("utf-8")
            except UnicodeDecodeError:
                if len(self._bytes) < 4:
                    return ""
                text = self._bytes.decode("utf-8", errors="replace")
            self._bytes.clear()
            return text
        pending = self._bytes.decode("utf-8", errors="replace")
        self._bytes.clear()
        return pending + piece_to_text(sp.id_to_piece(int(token)))
