"""The judges of `openmoshi eval dialogue`: questions answered right, talk-over, response delay.

All three read Moshi's timed words (`inference.transcript.Word`: from its text stream, or from Whisper on its
audio) against a conversation's ground truth (`dialogue_data.Conversation`). The definitions (docs/eval.md):

- Answered right. The reply window of a question opens `lead_s` (0.2 s) before the question's last word ends
  (`asked_end`) and closes at the earliest of `asked_end + window_s` (8 s) and the start of the user's next
  line that is not a backchannel, plus `grace_s` (1 s: a reply started in time is read to its end). The words of
  Moshi that START in the window are normalised (`dialogue_text.normalise`), and the first `max_reply_tokens`
  (15) are kept (a reply that lists everything is not right); the question is right when one of its accepted
  answers (normalised too) appears in them as a contiguous run (or, for spelled letters and lists of numbers, in
  the looser forms of `dialogue_text.matches`). Yes/no questions: the first "yes" or "no" of the window decides
  ("No, yes" is wrong), so a model cannot hedge by saying both.
- Talk-over. A backchannel of Moshi is a run of at most 3 backchannel words in a row ("mm-hm", "right",
  "okay", "yeah", "I see", ...; a pause over `utterance_gap_s`, 0.5 s, or any other word ends a run). A user
  line (not itself a backchannel) is talked over when a word of Moshi that is not part of a backchannel STARTS
  inside it, from `talkover_grace_s` (0.5 s) after the line starts to its end. The grace is Moshi's reaction
  time: when the user cuts in, the training data lets Moshi finish within 0.12-0.4 s.
- Response delay. For each user line (not a backchannel) that Moshi answers in the ground truth (the next line
  that is not a backchannel is Moshi's, and it starts after the user's end): from the end of the user's last word
  to the start of Moshi's first word that starts no earlier than one frame (80 ms) before it and before the
  user's next line (or within `window_s`). No such word: "no reply". The ground truth's own delay (its reply's
  start) is kept beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..inference.transcript import Word
from .dialogue_data import Conversation, Question, Turn
from .dialogue_text import matches, normalise, normalise_words

# what a backchannel of Moshi may be made of (after normalisation: "Uh-huh." -> "uh huh", "yeah" -> "yes")
BACKCHANNEL_WORDS = frozenset({"mm", "mmm", "hm", "hmm", "mhm", "mmhm", "uh", "huh", "uhhuh", "um", "right", "okay",
                               "yes", "i", "see", "oh", "sure", "alright", "ah", "aha"})
FRAME_S = 0.08


@dataclass(frozen=True)
class JudgeConfig:
    window_s: float = 8.0  # longest reply window after a question (and for a reply's delay)
    lead_s: float = 0.2  # words starting this much before the question's end still count
    grace_s: float = 1.0  # the window closes this long after the user's next line starts
    talkover_grace_s: float = 0.5  # Moshi's reaction time when the user starts speaking
    utterance_gap_s: float = 0.5  # a longer pause between two backchannel words ends a run
    backchannel_max_words: int = 3
    max_reply_tokens: int = 15  # only the first words of the window count: a reply listing everything is wrong


@dataclass(frozen=True)
class Verdict:
    """How one question was judged from one word stream."""

    right: bool
    reply: str  # Moshi's words in the window, as said
    matched: str | None  # the accepted answer found (None: none)


def next_user_start(turns: Sequence[Turn], after: float) -> float | None:
    """Start of the first user line (not a backchannel) that starts after `after` seconds, or None."""
    starts = [t.start for t in turns if not t.is_moshi and not t.is_backchannel and t.start > after]
    return min(starts) if starts else None


def reply_window(conv: Conversation, q: Question, cfg: JudgeConfig) -> tuple[float, float]:
    """[start, end) in seconds: the window in which Moshi's words answer `q` (see the module docstring)."""
    end = q.asked_end + cfg.window_s
    nxt = next_user_start(conv.turns, q.asked_end)
    if nxt is not None:
        end = min(end, nxt + cfg.grace_s)
    return q.asked_end - cfg.lead_s, end


def words_in(words: Sequence[Word], start: float, end: float) -> list[Word]:
    return [w for w in words if start <= w.start < end]


def judge_tokens(tokens: Sequence[str], answers: Sequence[str]) -> str | None:
    """The accepted answer found in `tokens` (normalised), or None. Yes/no answers: the first yes/no decides."""
    normalised = [normalise(a) for a in answers]
    if normalised and all(a in (["yes"], ["no"]) for a in normalised):
        first = next((t for t in tokens if t in ("yes", "no")), None)
        return next((ans for ans, n in zip(answers, normalised, strict=True) if [first] == n), None)
    for ans, n in zip(answers, normalised, strict=True):
        if matches(tokens, n):
            return ans
    return None


def judge_question(conv: Conversation, q: Question, words: Sequence[Word], cfg: JudgeConfig) -> Verdict:
    start, end = reply_window(conv, q, cfg)
    said = words_in(words, start, end)
    matched = judge_tokens(normalise_words(w.text for w in said)[: cfg.max_reply_tokens], q.answers)
    return Verdict(matched is not None, " ".join(w.text for w in said), matched)


def _is_backchannel_word(word: Word) -> bool:
    tokens = normalise(word.text)
    return bool(tokens) and all(t in BACKCHANNEL_WORDS for t in tokens)


def backchannel_flags(words: Sequence[Word], cfg: JudgeConfig) -> list[bool]:
    """Per word (in time order): part of a backchannel, i.e. of a run of at most `backchannel_max_words`
    backchannel words in a row ("Okay." before "Yes, cows give milk." is one; "right" inside a sentence too)."""
    bc = [_is_backchannel_word(w) for w in words]
    flags = [False] * len(words)
    i = 0
    while i < len(words):
        if not bc[i]:
            i += 1
            continue
        j = i  # the run of backchannel words from i to j
        while j + 1 < len(words) and bc[j + 1] and words[j + 1].start - words[j].end <= cfg.utterance_gap_s:
            j += 1
        if j - i + 1 <= cfg.backchannel_max_words:
            flags[i:j + 1] = [True] * (j - i + 1)
        i = j + 1
    return flags


@dataclass(frozen=True)
class TalkOver:
    """One user line and whether Moshi talked over it (`word`: the first offending word of Moshi, or None)."""

    turn: Turn
    word: Word | None

    @property
    def talked_over(self) -> bool:
        return self.word is not None


def talk_over(conv: Conversation, words: Sequence[Word], cfg: JudgeConfig) -> list[TalkOver]:
    """For each user line of `conv` (not a backchannel): the first non-backchannel word of Moshi that starts
    inside it, past the reaction grace (see the module docstring)."""
    ordered = sorted(words, key=lambda w: w.start)
    speech = [w for w, bc in zip(ordered, backchannel_flags(ordered, cfg), strict=True) if not bc]
    out = []
    for turn in conv.user_turns:
        if turn.is_backchannel:
            continue
        inside = [w for w in speech if turn.start + cfg.talkover_grace_s <= w.start < turn.end]
        out.append(TalkOver(turn, inside[0] if inside else None))
    return out


@dataclass(frozen=True)
class Delay:
    """Moshi's response to one user line: `delay` (seconds; None = no reply) and the ground truth's."""

    turn: Turn
    delay: float | None
    truth: float


def answered_turns(conv: Conversation) -> list[tuple[Turn, Turn]]:
    """(user line, Moshi's reply) pairs of the ground truth: the user's line (not a backchannel) is followed by a
    line of Moshi (not a backchannel) that starts after it ends, before any other user line."""
    main = [t for t in conv.turns if not t.is_backchannel]
    return [(a, b) for a, b in zip(main, main[1:], strict=False)
            if not a.is_moshi and b.is_moshi and b.start >= a.end]


def delays(conv: Conversation, words: Sequence[Word], cfg: JudgeConfig) -> list[Delay]:
    ordered = sorted(words, key=lambda w: w.start)
    out = []
    for user, reply in answered_turns(conv):
        limit = user.end + cfg.window_s
        nxt = next_user_start(conv.turns, user.end)
        if nxt is not None:
            limit = min(limit, nxt)
        first = next((w for w in ordered if user.end - FRAME_S <= w.start < limit), None)
        out.append(Delay(user, None if first is None else round(first.start - user.end, 3),
                         round(reply.start - user.end, 3)))
    return out

