"""The answer normaliser of `openmoshi eval dialogue`: text -> a list of canonical word tokens.

Moshi's text stream and Whisper's transcript write the same answer in different ways ("Twenty." / "20",
"G, I, F, T." / "G-I-F-T", "gray" / "grey", "yeah" / "yes"); the generator's accepted answers are lower-case
words ("twenty", "20", "g i f t", "gift", "black and white"). Both sides go through `normalise`, and an answer
is found when its tokens appear as a contiguous run in the reply's tokens (`contains`). The rules:
- lower case; apostrophes dropped ("it's" -> "its"); hyphens, slashes and every other punctuation mark split
  words ("G-I-F-T" -> "g i f t", "forty-two" -> "forty two", "G.I.F.T." -> "g i f t");
- numbers become words, so digits and words match both ways: "20" -> "twenty", "1,000" -> "one thousand",
  "42nd" -> "forty second"; "hundred and five" and "hundred five" both become "hundred five"; digits glued to
  letters ("fo2") are no number;
- a few spelling variants and informal forms become one word: gray -> grey, color -> colour, yeah/yep/yup ->
  yes, nope/nah -> no, ok -> okay.

Two looser comparisons (`matches`) catch how Whisper writes spelled words and counts: an answer of single letters
("g i f t") also matches the reply's letters with the spaces removed ("GI -F -T." -> "gift"), and an answer of
several numbers ("nine ten eleven twelve") also matches the reply's numbers written one after the other
("910, 1112" -> 9101112).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}
VARIANTS = {"gray": "grey", "color": "colour", "colors": "colours", "yeah": "yes", "yep": "yes", "yup": "yes",
            "nope": "no", "nah": "no", "ok": "okay"}
_CHUNK = re.compile(r"[^\W_]+", re.UNICODE)  # letters and digits; everything else separates
_ORDINAL_DIGITS = re.compile(r"(\d+)(st|nd|rd|th)")
_DIGIT_GROUPS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # 1,000 -> 1000 (but "1, 2, 3" stays a list)


def number_words(n: int) -> list[str]:
    """0..999,999,999 in words, without "and" or hyphens: 105 -> ['one', 'hundred', 'five']."""
    if n < 0 or n >= 10**9:
        return [str(n)]
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        tens, ones = divmod(n, 10)
        return [_TENS[tens - 2]] + ([] if ones == 0 else [_ONES[ones]])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            high, rest = divmod(n, size)
            return number_words(high) + [name] + ([] if rest == 0 else number_words(rest))
    raise AssertionError("unreachable")


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return words[:-1] + [last]


def normalise(text: str) -> list[str]:
    """Text -> canonical tokens (see the module docstring): "It's 20." -> ['its', 'twenty']."""
    text = _DIGIT_GROUPS.sub("", text.lower().replace("'", "").replace("\u2019", ""))
    out: list[str] = []
    for token in _CHUNK.findall(text):
        if token.isdigit():
            out.extend(number_words(int(token)))
        elif (m := _ORDINAL_DIGITS.fullmatch(token)) is not None:
            out.extend(_ordinal(number_words(int(m.group(1)))))
        else:  # words; a chunk mixing letters and digits ("fo2", "mp3") is one token that is no number
            out.append(VARIANTS.get(token, token))
    # "one hundred and five" -> "one hundred five", as number_words writes it
    return [t for i, t in enumerate(out)
            if not (t == "and" and 0 < i < len(out) - 1 and out[i - 1] in ("hundred", "thousand", "million")
                    and out[i + 1] in _ONES + _TENS)]


def normalise_words(words: Iterable[str]) -> list[str]:
    """Several words (e.g. a reply's timed words) -> one token list."""
    return normalise(" ".join(words))


def find(tokens: Sequence[str], answer: Sequence[str]) -> int:
    """Index of the first contiguous occurrence of `answer` in `tokens`, or -1 (an empty answer is never found)."""
    n = len(answer)
    if n == 0:
        return -1
    for i in range(len(tokens) - n + 1):
        if list(tokens[i:i + n]) == list(answer):
            return i
    return -1


def contains(tokens: Sequence[str], answer: Sequence[str]) -> bool:
    return find(tokens, answer) >= 0


_VALUES = {w: i for i, w in enumerate(_ONES)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6}


def _kind(token: str) -> str | None:
    if token in _SCALES:
        return token
    value = _VALUES.get(token)
    if value is None:
        return None
    return "unit" if value < 10 else "teen" if value < 20 else "tens"


# which kind of number word may continue a number that ended with a word of each kind
_EXTENDS = {"unit": {"hundred", "thousand", "million"}, "teen": {"hundred", "thousand", "million"},
            "tens": {"unit", "thousand", "million"}, "hundred": {"unit", "teen", "tens", "thousand", "million"},
            "thousand": {"unit", "teen", "tens"}, "million": {"unit", "teen", "tens"}}


def numbers(tokens: Sequence[str]) -> list[int]:
    """The numbers written in words in normalised tokens, in order: "nine ten" -> [9, 10], "nine hundred ten
    one thousand one hundred twelve" -> [910, 1112]."""
    out: list[int] = []
    total = group = 0
    last: str | None = None
    for token in [*tokens, ""]:
        kind = _kind(token)
        if last is not None and (kind is None or kind not in _EXTENDS[last]):
            out.append(total + group)
            total = group = 0
            last = None
        if kind is None:
            continue
        if kind in ("unit", "teen", "tens"):
            group += _VALUES[token]
        elif kind == "hundred":
            group = (group or 1) * 100
        else:
            total += (group or 1) * _SCALES[kind]
            group = 0
        last = kind
    return out


def matches(tokens: Sequence[str], answer: Sequence[str]) -> bool:
    """`answer` (normalised) in `tokens` (normalised): as a contiguous run, or by the looser comparisons of the
    module docstring for spelled letters and lists of numbers."""
    if contains(tokens, answer):
        return True
    if len(answer) >= 2 and all(len(t) == 1 and t.isalpha() for t in answer):
        return "".join(answer) in "".join(tokens)
    if len(answer) >= 2 and all(_kind(t) is not None for t in answer):
        wanted = numbers(answer)
        return len(wanted) >= 2 and "".join(map(str, wanted)) in "".join(map(str, numbers(tokens)))
    return False
