"""SentencePiece wrapper: special ids, display text, streaming decode; a tiny model is trained on the fly."""

import pytest
from spm_testutils import train_tiny_spm

from openmoshi.lm.text import TEXT_EPAD_ID, TEXT_PAD_ID, TextStreamDecoder, TextTokenizer, piece_to_text


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return TextTokenizer(train_tiny_spm(tmp_path_factory.mktemp("spm"), "tiny"), text_card=512)


def test_special_ids(tokenizer):
    assert TEXT_PAD_ID == tokenizer.pad_id == 3 and TEXT_EPAD_ID == tokenizer.epad_id == 0
    assert tokenizer.initial_id == 512
    for t in (0, 3, 512, -1, -2):
        assert tokenizer.is_special(t) and tokenizer.display(t) == ""
    assert tokenizer.decode([3, 0, 3]) == ""


def test_round_trip_and_display(tokenizer):
    ids = tokenizer.encode("Hello there, how are you?")
    assert tokenizer.decode(ids) == "Hello there, how are you?"
    shown = "".join(tokenizer.display(i) for i in ids)
    assert shown.strip() == "Hello there, how are you?"
    assert any(tokenizer.piece(i).startswith("\u2581") for i in ids)
    assert piece_to_text("\u2581word") == " word"


def test_stream_decoder_joins_byte_pieces(tokenizer):
    ids = tokenizer.encode("Hello 日本")  # not in the corpus: byte fallback, multi-byte UTF-8
    assert any(tokenizer.sp.is_byte(i) for i in ids)
    dec = TextStreamDecoder(tokenizer)
    out = "".join(dec.push(i) for i in [3] + ids + [0])
    assert out.strip() == "Hello 日本"


def test_tokenizer_larger_than_model_is_refused(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="text_card"):
        TextTokenizer(tokenizer.sp.serialized_model_proto() and _write(tmp_path, tokenizer), text_card=50)
    with pytest.raises(FileNotFoundError):
        TextTokenizer(tmp_path / "missing.model")


def _write(tmp_path, tokenizer):
    p = tmp_path / "copy.model"
    p.write_bytes(tokenizer.sp.serialized_model_proto())
    return p


def test_special_ids_come_from_the_model_config(tmp_path_factory):
    from openmoshi.lm.config import LMConfig

    path = train_tiny_spm(tmp_path_factory.mktemp("spm_cfg"), "tiny")
    cfg = LMConfig.tiny(text_card=400, text_padding_id=5, text_end_padding_id=7)
    tok = TextTokenizer.for_model(path, cfg)
    assert (tok.pad_id, tok.epad_id, tok.initial_id) == (5, 7, cfg.text_initial_id) == (5, 7, 400)
    assert tok.is_special(5) and tok.is_special(7) and not tok.is_special(3)


def test_bad_tokenizer_files_are_clear_errors(tmp_path):
    from openmoshi.lm.text import TokenizerError

    for content in (b"", b"not a sentencepiece model"):
        (tmp_path / "bad.model").write_bytes(content)
        with pytest.raises(TokenizerError, match="is not a SentencePiece model"):
            TextTokenizer(tmp_path / "bad.model")
    with pytest.raises(FileNotFoundError):
        TextTokenizer(tmp_path / "missing.model")
    path = train_tiny_spm(tmp_path / "spm", "tiny")
    with pytest.raises(TokenizerError, match="more than the model's text_card 100"):
        TextTokenizer(path, text_card=100)
