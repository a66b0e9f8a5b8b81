"""Plan a conversation: who says what, in which order, and how each line is timed against the one before.

A plan is a list of `Line`s. Timing is relative, resolved by mix.py once the lines are spoken (word times known):
- "after": the line's first word starts `gap` seconds after the last word of the previous main line (the floor);
  Moshi answers within a few hundred ms (`moshi_gap`), the user takes longer and sometimes lets a silence fall.
- "during": a backchannel over the previous main line of the other speaker, just after one of its words
  (at about `frac` of the way through, preferring the end of a phrase); it does not take the floor.
- "interrupt": the user starts speaking at about `frac` of Moshi's previous line; Moshi stops `reaction` seconds
  later (its audio and words are cut there) and the user's line takes the floor.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from openmoshi.data.synth import facts
from openmoshi.data.synth.content import Question, after_prefix, ask, cap

MOSHI, USER = "moshi", "user"


@dataclass
class Line:
    speaker: str  # MOSHI or USER
    text: str
    kind: str  # greeting, question, answer, smalltalk, long, backchannel, thanks, goodbye
    timing: str = "after"  # after | during | interrupt
    gap: float = 0.0  # "after": seconds from the floor's last word to this line's first word
    frac: float = 0.5  # "during"/"interrupt": where in the previous main line (0..1)
    reaction: float = 0.0  # "interrupt": seconds from the user's first word to Moshi's stop
    question: Question | None = None


def moshi_gap(rng: random.Random) -> float:
    """Moshi's response delay: mostly 150-350 ms, always within 80-600 ms."""
    return min(0.6, max(0.08, rng.lognormvariate(-1.35, 0.35)))


def user_gap(rng: random.Random) -> float:
    """The user's delay: usually under a second and a half; one time in seven a long silence (2-4 s)."""
    return rng.uniform(2.0, 4.0) if rng.random() < 0.15 else rng.uniform(0.25, 1.4)


def _question_exchange(rng: random.Random, split: str, lines: list[Line]) -> None:
    q = ask(rng, split)
    text = after_prefix(rng.choice(facts.NEXT_QUESTION), q.text)
    lines.append(Line(USER, text, "question", gap=user_gap(rng), question=q))
    lines.append(Line(MOSHI, q.reply, "answer", gap=moshi_gap(rng)))
    if rng.random() < 0.3:
        lines.append(Line(USER, rng.choice(facts.USER_THANKS), "thanks", gap=rng.uniform(0.2, 0.9)))
        if rng.random() < 0.5:
            lines.append(Line(MOSHI, rng.choice(facts.MOSHI_WELCOME), "thanks", gap=moshi_gap(rng)))


def _small_talk(rng: random.Random, lines: list[Line]) -> None:
    said, replies = rng.choice(facts.SMALL_TALK)
    reply = rng.choice(replies)
    lines.append(Line(USER, said, "smalltalk", gap=user_gap(rng)))
    lines.append(Line(MOSHI, reply, "smalltalk", gap=moshi_gap(rng)))
    if len(reply.split()) >= 6 and rng.random() < 0.4:
        lines.append(Line(USER, rng.choice(facts.BACKCHANNELS_USER), "backchannel", "during",
                          frac=rng.uniform(0.4, 0.8)))


def _long_talk(rng: random.Random, split: str, lines: list[Line]) -> None:
    said, monologue = rng.choice(facts.LONG_TALK)
    lines.append(Line(USER, said, "smalltalk", gap=user_gap(rng)))
    lines.append(Line(MOSHI, monologue, "long", gap=moshi_gap(rng)))
    if rng.random() < 0.6:  # the user cuts in with a question; Moshi stops and answers it
        q = ask(rng, split)
        lines.append(Line(USER, after_prefix(rng.choice(facts.INTERRUPTIONS), q.text), "question", "interrupt",
                          frac=rng.uniform(0.15, 0.75), reaction=rng.uniform(0.12, 0.4), question=q))
        lines.append(Line(MOSHI, q.reply, "answer", gap=moshi_gap(rng)))
    else:
        for frac in sorted(rng.uniform(0.2, 0.9) for _ in range(rng.randint(1, 2))):
            lines.append(Line(USER, rng.choice(facts.BACKCHANNELS_USER), "backchannel", "during", frac=frac))
        lines.append(Line(USER, rng.choice(facts.USER_THANKS), "thanks", gap=rng.uniform(0.2, 1.0)))


def _statement_then_question(rng: random.Random, split: str, lines: list[Line]) -> None:
    """The user says something, then asks; Moshi backchannels between the two and then answers."""
    said, _ = rng.choice([s for s in facts.SMALL_TALK if s[0].endswith(".")])
    q = ask(rng, split)
    lines.append(Line(USER, f"{said} {cap(q.text)}", "question", gap=user_gap(rng), question=q))
    first_sentence = len(said.split()) / (len(said.split()) + len(q.text.split()))
    lines.append(Line(MOSHI, rng.choice(facts.BACKCHANNELS_MOSHI), "backchannel", "during",
                      frac=first_sentence - 1e-3))
    lines.append(Line(MOSHI, q.reply, "answer", gap=moshi_gap(rng)))


def plan(rng: random.Random, split: str, exchanges: tuple[int, int] = (2, 6)) -> list[Line]:
    """A whole conversation: greetings, `exchanges` (min, max) exchanges of questions and small talk, often a
    goodbye. The first line's gap is the silence before anyone speaks."""
    lines: list[Line] = []
    lead = rng.uniform(0.3, 1.5)
    if rng.random() < 0.55:
        lines.append(Line(MOSHI, rng.choice(facts.MOSHI_GREETINGS), "greeting", gap=lead))
        if rng.random() < 0.5:
            lines.append(Line(USER, rng.choice(facts.USER_GREETINGS), "greeting", gap=user_gap(rng)))
    else:
        lines.append(Line(USER, rng.choice(facts.USER_GREETINGS), "greeting", gap=lead))
        lines.append(Line(MOSHI, rng.choice(facts.MOSHI_GREETING_REPLIES), "greeting", gap=moshi_gap(rng)))
    for _ in range(rng.randint(*exchanges)):
        r = rng.random()
        if r < 0.55:
            _question_exchange(rng, split, lines)
        elif r < 0.7:
            _small_talk(rng, lines)
        elif r < 0.87:
            _long_talk(rng, split, lines)
        else:
            _statement_then_question(rng, split, lines)
    if rng.random() < 0.75:
        lines.append(Line(USER, rng.choice(facts.USER_GOODBYES), "goodbye", gap=user_gap(rng)))
        lines.append(Line(MOSHI, rng.choice(facts.MOSHI_GOODBYES), "goodbye", gap=moshi_gap(rng)))
    return lines
