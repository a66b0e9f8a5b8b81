"""The nanomoshi tokenizer trainer: the words of a manifest's sidecars -> a SentencePiece model with Kyutai's
special ids (EPAD 0 = <unk>, PAD 3 = <pad>), byte fallback, clear errors on bad input."""

import json

import pytest
import sentencepiece as spm

from openmoshi.data.tokenizer import PAD_ID, UNK_ID, TokenizerError, main, manifest_lines, train_tokenizer
from openmoshi.lm.config import LMConfig
from openmoshi.lm.text import TextTokenizer

WORDS = ("hello there how are you today seven plus two is nine the sky is blue what colour is a banana "
         "yellow spell cat c a t count from one to five one two three four five goodbye thank you").split()


def write_manifest(folder, n=12):
    lines = []
    for i in range(n):
        words = [WORDS[(i * 7 + j) % len(WORDS)] for j in range(15)]
        al = [[w, [j * 0.4, j * 0.4 + 0.3], "SPEAKER_MAIN" if j % 2 else "SPEAKER_USER"]
              for j, w in enumerate(words)]
        (folder / f"c{i}.json").write_text(json.dumps({"alignments": al}))
        lines.append(json.dumps({"path": f"c{i}.wav", "duration": 6.0}))
    lines.append(json.dumps({"path": "unfinished.wav", "duration": 3.0}))  # no sidecar: skipped
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "manifest.jsonl"


def test_lines_are_each_speakers_words(tmp_path):
    lines = list(manifest_lines(write_manifest(tmp_path, n=2)))
    assert len(lines) == 4  # two speakers in each of the two conversations
    words = [WORDS[j % len(WORDS)] for j in range(15)]
    assert lines[0].split() == words[0::2] and lines[1].split() == words[1::2]  # in order of first word


def test_trained_model_has_kyutais_special_ids_and_no_unk(tmp_path):
    out = train_tokenizer(manifest_lines(write_manifest(tmp_path)), tmp_path / "tok.model", vocab_size=300)
    sp = spm.SentencePieceProcessor(model_file=str(out))
    assert sp.id_to_piece(UNK_ID) == "<unk>" and sp.id_to_piece(PAD_ID) == "<pad>"
    assert sp.id_to_piece(1) == "<s>" and sp.id_to_piece(2) == "</s>"
    ids = sp.encode("hello zebra 日本 ünïcode")  # unseen characters: bytes, never <unk> (= EPAD)
    assert UNK_ID not in ids and PAD_ID not in ids
    assert sp.decode(ids) == "hello zebra 日本 ünïcode"
    tok = TextTokenizer(out, text_card=LMConfig.tiny(text_card=1024).text_card)  # the LM's reader accepts it
    assert tok.vocab_size <= 1024


def test_same_input_same_model(tmp_path):
    m = write_manifest(tmp_path)
    models = [spm.SentencePieceProcessor(model_file=str(
        train_tokenizer(manifest_lines(m), tmp_path / f"{n}.model", vocab_size=300))) for n in "ab"]
    # the pieces and their scores (the file also records the temporary paths it was trained from)
    a, b = ([(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.vocab_size())] for sp in models)
    assert a == b and len(a) > 260


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    with pytest.raises(TokenizerError, match="no such manifest"):
        list(manifest_lines(tmp_path / "missing.jsonl"))
    with pytest.raises(TokenizerError, match="too small"):
        train_tokenizer(["a b c"], tmp_path / "x.model", vocab_size=100)
    with pytest.raises(TokenizerError, match="no text"):
        train_tokenizer(["", "  "], tmp_path / "x.model", vocab_size=300)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.json").write_text("{not json")
    (bad / "m.jsonl").write_text(json.dumps({"path": "a.wav", "duration": 1}) + "\n")
    assert main([str(bad / "m.jsonl"), "--out", str(tmp_path / "x.model")]) == 2
    assert "not a sidecar" in capsys.readouterr().err
    assert not (tmp_path / "x.model").exists()
    m = write_manifest(tmp_path)
    assert main([str(m), "--out", str(m)]) == 2  # never overwrites its input
    assert main([str(m), "--out", str(tmp_path / "t.model"), "--vocab-size", "300"]) == 0
    assert "pieces" in capsys.readouterr().out
