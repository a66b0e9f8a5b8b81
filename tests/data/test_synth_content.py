"""Synthetic conversations, what is said: held-out split, correct answers, many phrasings, the plan's timing."""

import random
import re

import pytest

from openmoshi.data.synth import content, facts
from openmoshi.data.synth.content import FAMILIES, ask, instances, number_words, split_of
from openmoshi.data.synth.script import MOSHI, USER, moshi_gap, plan


def test_number_words():
    assert [number_words(n) for n in (0, 7, 13, 20, 42, 90, 100, 215)] == [
        "zero", "seven", "thirteen", "twenty", "forty-two", "ninety", "one hundred", "two hundred and fifteen"]
    with pytest.raises(ValueError, match="0..999"):
        number_words(1000)


def test_every_family_is_split_and_the_splits_are_disjoint():
    for family in FAMILIES:
        train = {k for k, _ in instances(family, "train")}
        held = {k for k, _ in instances(family, "eval")}
        assert train and held, family  # both splits have instances of every family
        assert not train & held
        assert train | held == {k for k, _ in instances(family)}
        assert all(split_of(k) == "eval" for k in held)
    with pytest.raises(ValueError, match="unknown split"):
        instances("colour", "test")
    with pytest.raises(ValueError, match="unknown question family"):
        instances("nope")


@pytest.mark.parametrize("split", ["train", "eval"])
def test_asked_questions_come_only_from_their_split(split):
    rng = random.Random(5)
    other = {k for f in FAMILIES for k, _ in instances(f, "eval" if split == "train" else "train")}
    for _ in range(2000):
        q = ask(rng, split)
        assert q.key not in other
        assert split_of(q.key) == split


def test_answers_are_correct():
    rng = random.Random(1)
    seen = 0
    for _ in range(3000):
        q = ask(rng, "train")
        reply = q.reply.lower()
        assert any(a in reply or a in reply.replace(",", "") for a in q.answers), (q.text, q.reply, q.answers)
        op = re.match(r"(add|sub|mul):(\d+):(\d+)", q.key)
        if op:
            a, b = int(op[2]), int(op[3])
            want = {"add": a + b, "sub": a - b, "mul": a * b}[op[1]]
            assert number_words(want) in q.answers and re.search(rf"\b{number_words(want)}\b", reply)
            seen += 1
        if q.family == "spell":
            word = q.key.split(":")[1]
            assert " ".join(word) in q.answers
            assert re.sub(r"[^a-z]", "", reply.split("spelled")[-1].replace("sure", "")) == word
        if q.family == "days":
            side, day = q.key.split(":")
            i = facts.DAYS.index(day)
            want = facts.DAYS[(i + 1) % 7] if side == "day_after" else facts.DAYS[(i - 1) % 7]
            assert q.answers == (want.lower(),)
    assert seen > 100


def test_many_phrasings_of_each_family():
    rng = random.Random(2)
    texts: dict[str, set[str]] = {f: set() for f in FAMILIES}
    for _ in range(4000):
        q = ask(rng, "train")
        key_words = set(re.findall(r"[a-z]+", q.key.lower()))
        texts[q.family].add(" ".join(w for w in re.findall(r"[a-z]+", q.text.lower()) if w not in key_words))
    for family, shapes in texts.items():
        assert len(shapes) >= 3, (family, shapes)


def test_after_prefix_lowers_the_question_but_not_i():
    assert content.after_prefix("Actually, ", "What is two plus two?") == "Actually, what is two plus two?"
    assert content.after_prefix("Actually, ", "I was wondering.") == "Actually, I was wondering."
    assert content.after_prefix("One more. ", "What is x?") == "One more. What is x?"


def test_plan_has_real_turn_taking():
    kinds = {"interrupt": 0, "during_moshi": 0, "during_user": 0, "long_silence": 0}
    for seed in range(300):
        lines = plan(random.Random(seed), "train")
        assert lines[0].timing == "after"
        for line in lines:
            if line.speaker == MOSHI and line.timing == "after" and line.kind != "greeting":
                assert 0.08 <= line.gap <= 0.6  # Moshi answers within a few hundred ms
            if line.timing == "interrupt":
                kinds["interrupt"] += 1
                assert line.speaker == USER and 0.1 <= line.reaction <= 0.5
            if line.timing == "during":
                kinds["during_moshi" if line.speaker == MOSHI else "during_user"] += 1
                assert line.kind == "backchannel"
            if line.speaker == USER and line.gap >= 2.0:
                kinds["long_silence"] += 1
    assert all(v > 10 for v in kinds.values()), kinds
    gaps = [moshi_gap(random.Random(i)) for i in range(500)]
    assert 0.15 < sorted(gaps)[250] < 0.35
