"""Inner monologue -> timed words: stamping, word marks, PAD/EPAD skipping, byte fallback, JSON and SRT."""

import json

import pytest
from runtime_testutils import train_tiny_spm

from openmoshi.inference.transcript import (
    Word,
    group_cues,
    read_json,
    to_srt,
    words_from_tokens,
    write_json,
    write_srt,
)
from openmoshi.lm.text import TEXT_EPAD_ID, TEXT_PAD_ID, TextTokenizer

PAD, EPAD = TEXT_PAD_ID, TEXT_EPAD_ID


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return TextTokenizer(train_tiny_spm(tmp_path_factory.mktemp("spm")), text_card=512)


def pieces(tok, text):
    return tok.sp.encode(text, out_type=str), tok.encode(text)


def test_words_are_stamped_at_their_first_piece(tok):
    _, hello = pieces(tok, "Hello")
    _, there = pieces(tok, "there")
    # step:   0   1    2     3..           then PAD, EPAD, the second word
    tokens = [-2, PAD, EPAD, *hello, PAD, EPAD, *there, PAD]
    words = words_from_tokens(tokens, tok)
    assert [w.text for w in words] == ["Hello", "there"]
    assert words[0].start == pytest.approx(3 * 0.08)
    assert words[0].end == pytest.approx((3 + len(hello)) * 0.08)
    second = 3 + len(hello) + 2
    assert words[1].start == pytest.approx(second * 0.08)
    assert words[1].end == pytest.approx((second + len(there)) * 0.08)


def test_pieces_without_word_mark_continue_the_word_across_pads(tok):
    strs, ids = pieces(tok, "foundation")
    assert len(ids) >= 2 and strs[0].startswith("\u2581") and not strs[1].startswith("\u2581")
    # A PAD in the middle of a word (the model spelling slowly) does not split it.
    tokens = [ids[0], PAD, *ids[1:]]
    words = words_from_tokens(tokens, tok)
    assert [w.text for w in words] == ["foundation"]
    assert words[0].start == 0.0 and words[0].end == pytest.approx((len(ids) + 1) * 0.08)


def test_special_and_marker_tokens_are_skipped(tok):
    _, hi = pieces(tok, "Hello")
    tokens = [-2, -1, tok.initial_id, PAD, EPAD, 1, 2, *hi]  # 1, 2: control pieces <s> </s>
    words = words_from_tokens(tokens, tok)
    assert [w.text for w in words] == ["Hello"]
    assert words[0].start == pytest.approx(7 * 0.08)
    assert words_from_tokens([PAD, EPAD, -2, PAD], tok) == []


def test_byte_fallback_is_decoded_as_utf8(tok):
    _, ids = pieces(tok, "naïve \u00e9t\u00e9 \u4e2d")
    assert any(tok.sp.is_byte(i) for i in ids)
    words = words_from_tokens(ids, tok)
    assert [w.text for w in words] == ["naïve", "\u00e9t\u00e9", "\u4e2d"]


def test_full_sentence_round_trip(tok):
    sentence = "Moshi is a speech text foundation model for real time dialogue."
    words = words_from_tokens(tok.encode(sentence), tok)
    assert " ".join(w.text for w in words) == sentence
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(w.end > w.start for w in words)


def test_json_is_kyutai_sidecar_layout(tmp_path):
    words = [Word("Hello", 0.24, 0.4), Word("there.", 0.56, 0.72)]
    write_json(tmp_path / "t.json", words)
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["text"] == "Hello there."
    assert data["alignments"] == [["Hello", [0.24, 0.4], "SPEAKER_MAIN"], ["there.", [0.56, 0.72], "SPEAKER_MAIN"]]
    assert read_json(tmp_path / "t.json") == words


def test_srt_cues(tmp_path):
    words = [Word("Hi.", 0.0, 0.16), Word("How", 0.24, 0.32), Word("are", 0.4, 0.48), Word("you", 3.2, 3.44),
             Word("today", 3661.0, 3661.5)]
    cues = group_cues(words)
    # split after the full stop, at the 2.7 s pause, and at the hour-long pause
    assert [[w.text for w in c] for c in cues] == [["Hi."], ["How", "are"], ["you"], ["today"]]
    srt = to_srt(words)
    assert srt.startswith("1\n00:00:00,000 --> 00:00:00,160\nHi.\n\n2\n00:00:00,240 --> 00:00:00,480\nHow are\n")
    assert "4\n01:01:01,000 --> 01:01:01,500\ntoday\n" in srt
    write_srt(tmp_path / "t.srt", words)
    assert (tmp_path / "t.srt").read_text() == srt
    long = [Word(f"w{i}", i * 0.3, i * 0.3 + 0.2) for i in range(30)]
    assert all(len(c) <= 12 and c[-1].end - c[0].start <= 5.0 for c in group_cues(long))
