"""The inner monologue's grid rule on hand-made cases (FACTS.md, "Inner monologue"), and against a frame-by-frame
simulation of the rule on random word lists."""

from __future__ import annotations

import random

import numpy as np
import pytest

from openmoshi.data.manifest import Word, moshi_words
from openmoshi.data.text_grid import start_frame, text_stream
from openmoshi.lm.text import TextTokenizer
from openmoshi.testing.spm import train_tiny_spm

P, E = 3, 0  # PAD, EPAD (moshiko's)
TOKENS = {"a": [10], "bb": [20, 21], "ccc": [30, 31, 32], "dddd": [40, 41, 42, 43], "e": [50]}


def encode(text: str) -> list[int]:
    return TOKENS[text]


def grid(words, frames, rate=12.5, pad=P, epad=E):
    return text_stream([Word(*w) if not isinstance(w, Word) else w for w in words], frames, rate, encode, pad,
                       epad).tolist()


def test_word_at_zero_has_no_epad_and_pads_after():
    assert grid([("ccc", 0.0, 0.3)], 6) == [30, 31, 32, P, P, P]


def test_epad_in_the_frame_before_a_word_and_floor_of_start():
    # 0.2 s * 12.5 = 2.5 -> frame 2; EPAD at frame 1
    assert grid([("bb", 0.2, 0.4)], 6) == [P, E, 20, 21, P, P]
    # 0.24 s is exactly frame 3 (no float slip to frame 2)
    assert start_frame(0.24, 12.5) == 3
    assert grid([("a", 0.24, 0.3)], 5) == [P, P, E, 10, P]


def test_words_closer_than_one_frame_the_later_one_cuts_the_earlier():
    # both start in frame 1 (0.08 and 0.12 s): the later word is written whole, the earlier one vanishes
    assert grid([("ccc", 0.08, 0.1), ("bb", 0.12, 0.2)], 6) == [E, 20, 21, P, P, P]


def test_word_longer_than_its_slot_is_cut_by_the_next_and_gets_no_epad_before_it():
    # dddd from frame 0 would fill 0..3; e starts at frame 2: dddd keeps 2 tokens, no EPAD (frame 1 is a token)
    assert grid([("dddd", 0.0, 0.1), ("e", 0.16, 0.2)], 6) == [40, 41, 50, P, P, P]
    # a word ending exactly where the next starts: no EPAD either
    assert grid([("bb", 0.0, 0.1), ("a", 0.16, 0.2)], 5) == [20, 21, 10, P, P]
    # one free frame between them: it becomes EPAD
    assert grid([("bb", 0.0, 0.1), ("a", 0.24, 0.3)], 5) == [20, 21, E, 10, P]


def test_text_past_the_audio_is_dropped():
    # ccc starts in the last frame: one token fits; a word starting after the end is dropped, its EPAD too
    assert grid([("a", 0.0, 0.05), ("ccc", 0.32, 0.5), ("bb", 0.5, 0.6)], 5) == [10, P, P, E, 30]
    assert grid([("bb", 1.0, 1.1)], 5) == [P] * 5


def test_order_of_the_sidecar_does_not_matter_and_custom_ids():
    words = [("a", 0.4, 0.5), ("bb", 0.0, 0.1)]
    assert grid(words, 7, pad=7, epad=8) == [20, 21, 7, 7, 8, 10, 7]


def test_blank_words_are_skipped_and_do_not_cut():
    words = [Word("dddd", 0.0, 0.3), Word("  ", 0.08, 0.1)]
    assert text_stream(words, 5, 12.5, lambda t: TOKENS[t] if t else [], P, E).tolist() == [40, 41, 42, 43, P]


def test_overlapping_speakers_only_moshi_words_make_the_stream():
    words = [Word("bb", 0.0, 0.2, "SPEAKER_MAIN"), Word("ccc", 0.08, 0.3, "SPEAKER_USER"),
             Word("a", 0.32, 0.4, "SPEAKER_MAIN")]
    stereo = moshi_words(words, channels=2)
    assert [w.text for w in stereo] == ["bb", "a"]
    assert grid(stereo, 6) == [20, 21, P, E, 10, P]
    # mono: every word counts (here the user's ccc cuts bb)
    assert grid(moshi_words(words, channels=1), 6) == [20, 30, 31, 32, 10, P]


def simulate(words, frames, rate):
    """The rule, frame by frame: at each frame, words starting in it replace what is still to be written."""
    out = [P] * frames
    queue: list[int] = []
    order = sorted(words, key=lambda w: w.start)
    i = 0
    for t in range(frames):
        new = False
        while i < len(order) and start_frame(order[i].start, rate) <= t:
            queue, new = list(encode(order[i].text)), True
            i += 1
        if queue:
            if new and t > 0 and out[t - 1] == P:
                out[t - 1] = E
            out[t] = queue.pop(0)
    return out


@pytest.mark.parametrize("seed", range(30))
def test_matches_a_frame_by_frame_simulation(seed):
    rng = random.Random(seed)
    words = [Word(rng.choice(list(TOKENS)), round(rng.uniform(0, 3), 2), 0.0) for _ in range(rng.randint(0, 12))]
    frames = rng.randint(1, 40)
    assert grid(words, frames) == simulate(words, frames, 12.5)


def test_with_a_sentencepiece_tokenizer(tmp_path):
    tok = TextTokenizer(train_tiny_spm(tmp_path), pad_id=P, epad_id=E)
    words = [Word("Hello", 0.1, 0.3), Word("weather", 0.5, 0.9)]
    out = text_stream(words, 20, 12.5, tok.encode, P, E)
    hello, weather = tok.encode("Hello"), tok.encode("weather")
    expected = np.full(20, P)
    expected[0] = E
    expected[1:1 + len(hello)] = hello
    expected[5] = E
    expected[6:6 + len(weather)] = weather
    assert out.tolist() == expected.tolist()
    assert tok.decode(out.tolist()).split() == ["Hello", "weather"]


def test_the_example_of_docs_data_md():
    tokens = {"hello": [1, 2], "wonderful": [11, 12, 13], "day": [21]}
    words = [Word("hello", 0.0, 0.3), Word("wonderful", 0.17, 0.6), Word("day", 0.5, 0.7)]
    assert text_stream(words, 8, 12.5, tokens.__getitem__, P, E).tolist() == [1, 2, 11, 12, 13, E, 21, P]
    words[1] = Word("wonderful", 0.10, 0.6)
    assert text_stream(words, 8, 12.5, tokens.__getitem__, P, E).tolist() == [1, 11, 12, 13, P, E, 21, P]
