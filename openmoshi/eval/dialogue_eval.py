"""`openmoshi eval dialogue`'s core: run a runner over conversations, judge every output, gather the figures.

`evaluate` takes any runner (`dialogue_run.ModelRunner`, `OracleRunner`, or a test's own) and an optional
recogniser; it judges each conversation as soon as the runner hands it over (so at most a batch of Moshi's audio
is held), from the text stream and, with a recogniser, from the audio transcribed. `DialogueResults.summary()`
is the figures (the JSON's `summary`); dialogue_report.py writes them out.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..inference.transcript import Word
from .dialogue_data import Conversation
from .dialogue_judge import Delay, JudgeConfig, TalkOver, Verdict, delays, judge_question, talk_over
from .dialogue_run import RtfResult, Runner

# the targets of issue 13, shown beside the figures
TARGETS = {"text_accuracy": 0.80, "audio_accuracy": 0.60, "talk_over_share": 0.10}


@dataclass
class QuestionRecord:
    conversation: str
    family: str
    key: str
    question: str
    answers: list[str]
    truth: str  # the ground truth's reply
    asked_end: float
    text: Verdict
    audio: Verdict | None = None


@dataclass
class StreamJudgement:
    """One word stream of one conversation (the text stream, or the audio's transcript) judged."""

    words: list[Word]
    talk_over: list[TalkOver]
    delays: list[Delay]


@dataclass
class ConversationRecord:
    name: str
    duration: float
    text: StreamJudgement
    audio: StreamJudgement | None = None


@dataclass
class DialogueResults:
    model: str
    judge: JudgeConfig
    questions: list[QuestionRecord] = field(default_factory=list)
    conversations: list[ConversationRecord] = field(default_factory=list)
    rtf: list[RtfResult] = field(default_factory=list)
    run_seconds: float = 0.0  # wall time of the runner (model steps)
    asr_seconds: float = 0.0  # wall time of the recogniser
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def has_audio(self) -> bool:
        return any(r.audio is not None for r in self.conversations)

    def accuracy(self, stream: str) -> dict[str, Any]:
        """{"right", "total", "accuracy", "per_family": {family: {...}}} for "text" or "audio"."""
        by_family: dict[str, list[bool]] = defaultdict(list)
        for q in self.questions:
            verdict = getattr(q, stream)
            if verdict is not None:
                by_family[q.family].append(verdict.right)
        flat = [v for vs in by_family.values() for v in vs]
        return {**_share(flat), "per_family": {f: _share(by_family[f]) for f in sorted(by_family)}}

    def talk_over_figures(self, stream: str) -> dict[str, Any]:
        flags = [t.talked_over for c in self.conversations if (j := getattr(c, stream)) for t in j.talk_over]
        return {"turns": len(flags), "talked_over": int(sum(flags)),
                "share": round(float(np.mean(flags)), 4) if flags else None}

    def delay_figures(self, stream: str) -> dict[str, Any]:
        items = [d for c in self.conversations if (j := getattr(c, stream)) for d in j.delays]
        return {**_stats([d.delay for d in items if d.delay is not None]), "turns": len(items),
                "no_reply_share": round(sum(d.delay is None for d in items) / len(items), 4) if items else None}

    def truth_delays(self) -> dict[str, Any]:
        return _stats([d.truth for c in self.conversations for d in c.text.delays])

    def summary(self) -> dict[str, Any]:
        streams = ["text"] + (["audio"] if self.has_audio else [])
        return {
            "model": self.model,
            "conversations": len(self.conversations),
            "audio_seconds": round(sum(c.duration for c in self.conversations), 2),
            "questions": len(self.questions),
            "accuracy": {s: self.accuracy(s) for s in streams},
            "talk_over": {s: self.talk_over_figures(s) for s in streams},
            "delay_s": {**{s: self.delay_figures(s) for s in streams}, "ground_truth": self.truth_delays()},
            "real_time": [r.summary() for r in self.rtf],
            "run_seconds": round(self.run_seconds, 2),
            "asr_seconds": round(self.asr_seconds, 2),
            "targets": TARGETS,
            "judge": asdict(self.judge),
            "settings": self.settings,
        }


def _share(flags: Sequence[bool]) -> dict[str, Any]:
    return {"right": int(sum(flags)), "total": len(flags),
            "accuracy": round(sum(flags) / len(flags), 4) if flags else None}


def _stats(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "p90": None, "mean": None}
    a = np.asarray(values, dtype=np.float64)
    return {"n": len(a), "median": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "mean": round(float(a.mean()), 3)}


def judge_stream(conv: Conversation, words: list[Word], cfg: JudgeConfig) -> tuple[list[Verdict], StreamJudgement]:
    verdicts = [judge_question(conv, q, words, cfg) for q in conv.questions]
    return verdicts, StreamJudgement(words, talk_over(conv, words, cfg), delays(conv, words, cfg))


def evaluate(conversations: Sequence[Conversation], runner: Runner, asr=None, cfg: JudgeConfig | None = None,
             progress: bool = True) -> DialogueResults:
    """Run `runner` over `conversations` and judge each output (text stream; audio too when `asr` is a
    `eval.asr.WhisperASR` and the runner kept the audio). Records follow the manifest's order."""
    from .dialogue_asr import transcribe_words

    cfg = cfg or JudgeConfig()
    results = DialogueResults(model=runner.name, judge=cfg)
    done: dict[int, tuple[list[QuestionRecord], ConversationRecord]] = {}
    run_start = time.perf_counter()
    asr_time = 0.0
    for out in runner.run(conversations, progress=progress):
        conv = out.conversation
        text_verdicts, text = judge_stream(conv, out.words, cfg)
        audio_verdicts: list[Verdict | None] = [None] * len(conv.questions)
        audio = None
        if asr is not None and out.audio is not None:
            t0 = time.perf_counter()
            heard = transcribe_words(asr, out.audio, out.sample_rate)
            asr_time += time.perf_counter() - t0
            verdicts, audio = judge_stream(conv, heard, cfg)
            audio_verdicts = list(verdicts)
        records = [QuestionRecord(conv.name, q.family, q.key, q.text, list(q.answers), q.reply, q.asked_end, tv, av)
                   for q, tv, av in zip(conv.questions, text_verdicts, audio_verdicts, strict=True)]
        done[conv.index] = (records, ConversationRecord(conv.name, conv.duration, text, audio))
    results.run_seconds = time.perf_counter() - run_start - asr_time
    results.asr_seconds = asr_time
    for index in sorted(done):
        records, conv_record = done[index]
        results.questions += records
        results.conversations.append(conv_record)
    return results
