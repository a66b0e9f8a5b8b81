"""The answer normaliser and the judges of `openmoshi eval dialogue` on hand-made cases (no audio, no model)."""

from __future__ import annotations

import pytest

from openmoshi.eval.dialogue_data import Conversation, Question, Turn
from openmoshi.eval.dialogue_judge import (
    JudgeConfig,
    backchannel_flags,
    delays,
    judge_question,
    judge_tokens,
    reply_window,
    talk_over,
)
from openmoshi.eval.dialogue_text import matches, normalise, number_words, numbers
from openmoshi.inference.transcript import Word


@pytest.mark.parametrize("text, tokens", [
    ("It's 20.", ["its", "twenty"]),
    ("Twenty-one!", ["twenty", "one"]),
    ("21", ["twenty", "one"]),
    ("one hundred and five", ["one", "hundred", "five"]),
    ("105", ["one", "hundred", "five"]),
    ("1,000 cats", ["one", "thousand", "cats"]),
    ("1, 2, 3", ["one", "two", "three"]),
    ("the 3rd and 42nd", ["the", "third", "and", "forty", "second"]),
    ("F, I, S, H.", ["f", "i", "s", "h"]),
    ("G-I-F-T", ["g", "i", "f", "t"]),
    ("G.I.F.T.", ["g", "i", "f", "t"]),
    ("Gray? Yeah, OK. Nope.", ["grey", "yes", "okay", "no"]),
    ("Black and white.", ["black", "and", "white"]),
    ("  ", []),
    ("fo2 3H mp3", ["fo2", "3h", "mp3"]),  # digits glued to letters are no number
    ("\ufffd2\ufffd", ["two"]),
])
def test_normalise(text, tokens):
    assert normalise(text) == tokens


def test_number_words_and_numbers_invert_each_other():
    for n in (0, 7, 13, 20, 42, 99, 100, 105, 110, 999, 1000, 1112, 25_301, 1_000_000):
        assert numbers(number_words(n)) == [n], n
    assert numbers(normalise("nine, ten, eleven, twelve")) == [9, 10, 11, 12]
    assert numbers(normalise("910, 1112")) == [910, 1112]


@pytest.mark.parametrize("reply, answer, right", [
    ("The answer is 20.", "twenty", True),
    ("The answer is twenty.", "20", True),
    ("It's twelve.", "two", False),  # a whole word, not a piece of one
    ("Fish is spelled F, I, S, H.", "f i s h", True),
    ("GI -F -T.", "g i f t", True),  # Whisper's way of writing spelled letters
    ("F, I, S.", "f i s h", False),
    ("910, 1112.", "nine ten eleven twelve", True),  # Whisper's way of writing a count
    ("Nine, ten, twelve.", "nine ten eleven twelve", False),
    ("Usually gray.", "grey", True),
    ("A zebra is black and white.", "black and white", True),
    ("It is black.", "black and white", False),
])
def test_matches(reply, answer, right):
    assert matches(normalise(reply), normalise(answer)) is right


def test_yes_no_the_first_one_decides():
    assert judge_tokens(normalise("Yeah, cows give milk."), ["yes"]) == "yes"
    assert judge_tokens(normalise("No, yes."), ["yes"]) is None
    assert judge_tokens(normalise("Yes. No."), ["yes"]) == "yes"
    assert judge_tokens(normalise("I know."), ["no"]) is None


def _conv(turns, questions=()) -> Conversation:
    return Conversation(0, "x.wav", None, 20.0, (), tuple(Turn(*t) for t in turns), tuple(questions))


USER, MOSHI = "SPEAKER_USER", "SPEAKER_MAIN"
# a question 1.0-3.0, Moshi answers at 3.2, the user's next line at 6.0 (a backchannel of the user at 4.0)
TURNS = [(USER, "question", "after", "What is two plus two?", 1.0, 3.0),
         (MOSHI, "answer", "after", "Four.", 3.2, 3.6),
         (USER, "backchannel", "during", "Mm.", 4.0, 4.3),
         (USER, "thanks", "after", "Thank you very much.", 6.0, 7.0)]
QUESTION = Question("arithmetic", "add:2:2", "What is two plus two?", ("four", "4"), "Four.", 3.0, 3.2)


def test_reply_window_and_verdicts():
    conv, cfg = _conv(TURNS, [QUESTION]), JudgeConfig()
    assert reply_window(conv, QUESTION, cfg) == pytest.approx((2.8, 7.0))  # the next line (not the backchannel)
    # the last case: the answer after 15 other words (a reply listing everything is not right)
    cases = [([Word("It's", 3.2, 3.3), Word("4.", 3.3, 3.4)], True),
             ([Word("Four.", 6.9, 7.0)], True),  # started in time
             ([Word("Four.", 7.1, 7.2)], False),  # too late: after the user's next line
             ([Word("Four.", 2.0, 2.1)], False),  # before the question ended
             ([Word("Five.", 3.2, 3.3)], False), ([], False),
             ([Word(f"w{i}", 3.1 + i * 0.1, 3.2 + i * 0.1) for i in range(15)] + [Word("four", 4.7, 4.8)], False)]
    for words, right in cases:
        assert judge_question(conv, QUESTION, words, cfg).right is right, words


def test_talk_over():
    conv, cfg = _conv(TURNS), JudgeConfig()
    flags = lambda words: [t.talked_over for t in talk_over(conv, words, cfg)]  # noqa: E731
    lines = [t.turn.text for t in talk_over(conv, [], cfg)]
    assert lines == ["What is two plus two?", "Thank you very much."]  # not the user's backchannel
    assert flags([Word("Four.", 3.2, 3.3)]) == [False, False]
    assert flags([Word("The", 2.0, 2.1), Word("sky", 2.1, 2.2)]) == [True, False]  # Moshi speaks over the question
    assert flags([Word("Mm-hm.", 2.0, 2.1)]) == [False, False]  # a backchannel is no talk-over
    assert flags([Word("I", 1.9, 2.0), Word("see.", 2.0, 2.1)]) == [False, False]
    assert flags([Word("and", 1.3, 1.4)]) == [False, False]  # within the reaction grace (0.5 s)
    assert flags([Word("and", 6.6, 6.7)]) == [False, True]
    assert flags([Word("Okay.", 2.0, 2.1), Word("Right,", 2.1, 2.2), Word("the", 2.25, 2.3),
                  Word("sky", 2.3, 2.4)]) == [True, False]


def test_backchannel_runs():
    cfg = JudgeConfig()
    words = [Word("Okay.", 1.0, 1.2), Word("Yes,", 1.3, 1.5), Word("cows", 1.5, 1.7),
             Word("right", 3.0, 3.2), Word("right", 3.2, 3.4), Word("right", 3.4, 3.6), Word("right", 3.6, 3.8)]
    assert backchannel_flags(words, cfg) == [True, True, False, False, False, False, False]


def test_delays():
    conv, cfg = _conv(TURNS), JudgeConfig()
    (d,) = delays(conv, [Word("Four.", 3.36, 3.5)], cfg)  # one answered line: the question
    assert d.delay == pytest.approx(0.36) and d.truth == pytest.approx(0.2)
    (d,) = delays(conv, [Word("Four.", 2.0, 2.1), Word("Four.", 3.6, 3.7)], cfg)
    assert d.delay == pytest.approx(0.6)  # the first word after the user's end
    (d,) = delays(conv, [Word("Four.", 6.5, 6.6)], cfg)
    assert d.delay is None  # nothing before the user's next line: no reply
