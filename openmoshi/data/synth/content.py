"""What the synthetic conversations say: question families with checkable answers, and the held-out split.

A question INSTANCE is what is asked, independent of its wording (`add:3:4`, `colour:a banana`, `spell:cat`);
each family has many phrasings of the question and several shapes of Moshi's (short, correct) answer. Instances
are split once and for all between training and evaluation by a hash of their key (`eval_keys`: in each family
the 15% whose keys hash lowest), so the eval
split (`--split eval`) asks only questions that no training conversation contains, whatever the seed.

Numbers are written as words (every synthesiser reads them alike and the words are the alignment's words).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import cache

from openmoshi.data.synth import facts

EVAL_PERCENT = 15  # share of each family's instances held out for evaluation
SPLITS = ("train", "eval")

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0..999 in words: 42 -> 'forty-two'."""
    if not 0 <= n < 1000:
        raise ValueError(f"number_words handles 0..999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens - 2] + ("" if ones == 0 else "-" + _ONES[ones])
    hundreds, rest = divmod(n, 100)
    return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def after_prefix(prefix: str, text: str) -> str:
    """`prefix` + `text`, the text's first letter lowered after a comma ("Actually, what is...") unless it
    starts with I."""
    first = text.split(" ", 1)[0]
    if prefix.rstrip().endswith(",") and first not in ("I", "I'm") and first not in facts.DAYS + facts.MONTHS:
        text = text[:1].lower() + text[1:]
    return prefix + text


@dataclass(frozen=True)
class Question:
    """One asked question: `key` names the instance, `answers` are the accepted answer strings (lower case,
    for a judge: any of them in Moshi's reply counts as right)."""

    family: str
    key: str
    text: str  # what the user says
    reply: str  # what Moshi says
    answers: tuple[str, ...] = field(default_factory=tuple)


def _rank(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@cache
def eval_keys() -> frozenset[str]:
    """The held-out instances: in each family, the EVAL_PERCENT% (at least one) whose keys hash lowest."""
    held: set[str] = set()
    for family in FAMILIES:
        keys = sorted((k for k, _ in instances(family)), key=_rank)
        held.update(keys[: max(1, round(len(keys) * EVAL_PERCENT / 100))])
    return frozenset(held)


def split_of(key: str) -> str:
    """'eval' for a held-out instance key, else 'train' (a fixed hash: the same on every machine)."""
    return "eval" if key in eval_keys() else "train"


# ---- instances per family: (key, data) ----------------------------------------------------------------------

def _arith_instances() -> list[tuple[str, tuple]]:
    out = [(f"add:{a}:{b}", ("plus", a, b, a + b)) for a in range(11) for b in range(11)]
    out += [(f"sub:{a}:{b}", ("minus", a, b, a - b)) for a in range(21) for b in range(min(a, 10) + 1)]
    out += [(f"mul:{a}:{b}", ("times", a, b, a * b)) for a in range(2, 11) for b in range(2, 11)]
    return out


def _count_instances() -> list[tuple[str, tuple]]:
    return [(f"count:{a}:{b}", (a, b)) for a in range(1, 11) for b in range(a + 2, min(a + 6, 16))]


def _seq_instances(names: tuple[str, ...], kind: str) -> list[tuple[str, tuple]]:
    n = len(names)
    out = [(f"{kind}_after:{x}", ("after", x, names[(i + 1) % n])) for i, x in enumerate(names)]
    out += [(f"{kind}_before:{x}", ("before", x, names[(i - 1) % n])) for i, x in enumerate(names)]
    return out


@cache
def instances(family: str, split: str | None = None) -> tuple[tuple[str, tuple], ...]:
    """The instances of a family (all, or those of one split), in a fixed order."""
    if family == "arithmetic":
        items = _arith_instances()
    elif family == "colour":
        items = [(f"colour:{thing}", (thing, colour)) for thing, colour in facts.COLOURS]
    elif family == "opposite":
        pairs = facts.OPPOSITES + tuple((b, a) for a, b in facts.OPPOSITES)
        items = [(f"opposite:{a}", (a, b)) for a, b in pairs]
    elif family == "spell":
        items = [(f"spell:{w}", (w,)) for w in facts.SPELL_WORDS]
    elif family == "repeat":
        items = [(f"repeat:{w}", (w,)) for w in facts.REPEAT_WORDS]
    elif family == "count":
        items = _count_instances()
    elif family == "days":
        items = _seq_instances(facts.DAYS, "day")
    elif family == "months":
        items = _seq_instances(facts.MONTHS, "month")
    elif family == "yesno":
        items = [(f"yesno:{q}", (q, yes, why)) for q, yes, why in facts.YES_NO]
    else:
        raise ValueError(f"unknown question family {family!r}; known: {', '.join(FAMILIES)}")
    if split is None:
        return tuple(items)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    held = eval_keys()
    return tuple(item for item in items if (item[0] in held) == (split == "eval"))


# ---- phrasings ------------------------------------------------------------------------------------------------

def _arithmetic(rng: random.Random, data: tuple) -> tuple[str, str, tuple[str, ...]]:
    op, a, b, c = data
    x, y, z = number_words(a), number_words(b), number_words(c)
    asks = [f"What is {x} {op} {y}?", f"What's {x} {op} {y}?", f"How much is {x} {op} {y}?",
            f"Can you tell me what {x} {op} {y} is?", f"{cap(x)} {op} {y}, what does that make?",
            f"Quick question, what's {x} {op} {y}?", f"Do you know what {x} {op} {y} is?"]
    if op == "plus":
        asks += [f"What do you get if you add {x} and {y}?", f"Add {x} and {y}.", f"What is the sum of {x} and {y}?"]
    elif op == "minus":
        asks += [f"What is {x} take away {y}?", f"If I have {x} and take away {y}, how many are left?",
                 f"Subtract {y} from {x}."]
    else:
        asks += [f"What is {x} multiplied by {y}?", f"Multiply {x} by {y}.", f"What are {x} times {y}?"]
    replies = [f"{cap(x)} {op} {y} is {z}.", f"{cap(z)}.", f"That's {z}.", f"It's {z}.", f"The answer is {z}."]
    return rng.choice(asks), rng.choice(replies), (z, str(c))


def _colour(rng: random.Random, data: tuple) -> tuple[str, str, tuple[str, ...]]:
    thing, colour = data
    asks = [f"What colour is {thing}?", f"What color is {thing}?", f"What is the colour of {thing}?",
            f"Tell me the colour of {thing}.", f"Which colour is {thing}?", f"What color is {thing} usually?",
            f"Do you know what colour {thing} is?"]
    replies = [f"{cap(thing)} is {colour}.", f"{cap(colour)}.", f"It's {colour}.", f"Usually {colour}."]
    return rng.choice(asks), rng.choice(replies), (colour,)


def _opposite(rng: random.Random, data: tuple) -> tuple[str, str, tuple[str, ...]]:
    word, other = data
    asks = [f"What is the opposite of {word}?", f"What's the opposite of {word}?", f"Tell me the opposite of {word}.",
            f"Give me the opposite of the word {word}.", f"What word means the opposite of {word}?",
            f"What's the opposite of the word {word}?"]
    replies = [f"The opposite of {word} is {other}.", f"{cap(other)}.", f"It's {other}."]
    return rng.choice(asks), rng.choice(replies), (other,)


def _spell(rng: random.Random, data: tuple) -> tuple[str, str, tuple[str, ...]]:
    (word,) = data
    letters = ", ".join(ch.upper() for ch in word) + "."
    asks = [f"How do you spell {word}?", f"Can you spell {word}?", f"Spell the word {word}, please.",
            f"Could you spell {word} for me?", f"How is {word} spelled?"]
    replies = [f"{cap(word)} is spelled {letters}", letters, f"Sure. {letters}"]
    return rng.choice(asks), rng.choice(replies), (" ".join(word), word)


def _repeat(rng: random.Random, data: tuple) -> tuple[str, str, tuple[str, ...]]:
    (word,) = data
    asks = [f"Can you say {word}?", f"Please repeat after me. {cap(word)}.", f"Say the word {word}.",
            f"Repeat the word {word}.", f"Could you say {word} for me?", f"Say {word}, please."]
    replies = [f"{cap(word)}.", f"Sure. {cap(word)}.", f"{cap(word)}, {word}."]
    return rng.choice(asks), rng.choice(replies), (word,)


def _count(rng: random.Random, data: tuple) -> tuple[str, str, tuple[str, ...]]:
    a, b = data
    x, y = number_words(a), number_words(b)
    asks = [f"Count from {x} to {y}.", f"Can you count from {x} to {y}?", f"Please count from {x} up to {y}.",
            f"Could you count from {x} to {y} for me?"]
    if a == 1:
        asks += [f"Count to {y}.", f"Can you count to {y}?"]
    words = [number_words(n) for n in range(a, b + 1)]
    reply = cap(", ".join(words)) + "."
    return rng.choice(asks), reply, (" ".join(words),)


def _sequence(rng: random.Random, data: tuple, kind: str) -> tuple[str, str, tuple[str, ...]]:
    side, name, answer = data
    if side == "after":
        asks = [f"What {kind} comes after {name}?", f"What is the {kind} after {name}?",
                f"Which {kind} follows {name}?", f"What {kind} is after {name}?"]
        replies = [f"{answer} comes after {name}.", f"{answer}.", f"It's {answer}.", f"After {name} comes {answer}."]
    else:
        asks = [f"What {kind} comes before {name}?", f"What is the {kind} before {name}?",
                f"Which {kind} is just before {name}?"]
        replies = [f"{answer} comes before {name}.", f"{answer}.", f"It's {answer}."]
    return rng.choice(asks), rng.choice(replies), (answer.lower(),)


def _yesno(rng: random.Random, data: tuple) -> tuple[str, str, tuple[str, ...]]:
    question, yes, why = data
    asks = [question, after_prefix("Tell me, ", question), f"Quick question. {question}",
            after_prefix("I was wondering, ", question)]
    word = "Yes" if yes else "No"
    replies = [f"{word}.", f"{word}, {why}", f"{word}, {why}"]
    return rng.choice(asks), rng.choice(replies), (word.lower(),)


_PHRASERS = {
    "arithmetic": _arithmetic, "colour": _colour, "opposite": _opposite, "spell": _spell, "repeat": _repeat,
    "count": _count, "days": lambda r, d: _sequence(r, d, "day"), "months": lambda r, d: _sequence(r, d, "month"),
    "yesno": _yesno,
}
FAMILIES = tuple(_PHRASERS)


def ask(rng: random.Random, split: str, family: str | None = None) -> Question:
    """A random question of `split` (of one family, or of a random one), phrased at random."""
    family = family or rng.choice(FAMILIES)
    key, data = rng.choice(instances(family, split))
    text, reply, answers = _PHRASERS[family](rng, data)
    return Question(family=family, key=key, text=text, reply=reply, answers=answers)
