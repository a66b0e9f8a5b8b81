"""The outputs of `openmoshi eval dialogue`: report.md, accuracy_per_family.png, delays.png, results.json.

`results.json` holds `summary` (every figure: `DialogueResults.summary()`), `questions` (one record per question:
the answers, what Moshi wrote and said in the reply window, the verdicts) and `conversations` (per conversation:
Moshi's words from the text stream and from the audio, the talked-over lines, the delays).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..io_safety import write_bytes, write_text
from .dialogue_eval import TARGETS, DialogueResults
from .plots import figure_png

OUTPUT_NAMES = ("report.md", "results.json", "accuracy_per_family.png", "delays.png")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _sec(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" (target met)" if ok else " (target missed)")


def _cell(text: str, limit: int = 90) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def report_json(results: DialogueResults) -> str:
    payload = {
        "summary": results.summary(),
        "questions": [asdict(q) for q in results.questions],
        "conversations": [{
            "name": c.name, "duration": c.duration,
            **{stream: None if (j := getattr(c, stream)) is None else {
                "words": [[w.text, [w.start, w.end]] for w in j.words],
                "talked_over": [{"turn": t.turn.text, "start": t.turn.start, "end": t.turn.end,
                                 "moshi_word": None if t.word is None else [t.word.text, t.word.start]}
                                for t in j.talk_over],
                "delays": [{"turn": d.turn.text, "user_end": d.turn.end, "delay": d.delay, "ground_truth": d.truth}
                           for d in j.delays]}
               for stream in ("text", "audio")}}
            for c in results.conversations],
    }
    return json.dumps(payload, indent=1, ensure_ascii=False) + "\n"


def _figure_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    acc, over, delay = s["accuracy"], s["talk_over"], s["delay_s"]
    rows = [("questions answered right, text stream",
             f"{_pct(acc['text']['accuracy'])} ({acc['text']['right']}/{acc['text']['total']})"
             + _mark(None if acc["text"]["accuracy"] is None else acc["text"]["accuracy"] >= TARGETS["text_accuracy"]))]
    if "audio" in acc:
        a = acc["audio"]
        rows.append(("questions answered right, audio (Whisper tiny.en)",
                     f"{_pct(a['accuracy'])} ({a['right']}/{a['total']})"
                     + _mark(None if a["accuracy"] is None else a["accuracy"] >= TARGETS["audio_accuracy"])))
    for stream, figures in over.items():
        rows.append((f"user lines talked over ({stream})",
                     f"{_pct(figures['share'])} ({figures['talked_over']}/{figures['turns']})"
                     + _mark(None if figures["share"] is None else figures["share"] < TARGETS["talk_over_share"])))
    truth = delay["ground_truth"]
    for stream in over:
        d = delay[stream]
        rows.append((f"response delay ({stream}): median / p90",
                     f"{_sec(d['median'])} / {_sec(d['p90'])} over {d['n']} replies; no reply to "
                     f"{_pct(d['no_reply_share'])} of {d['turns']} lines"))
    rows.append(("response delay of the ground truth: median / p90", f"{_sec(truth['median'])} / {_sec(truth['p90'])}"))
    for r in s["real_time"]:
        rows.append((f"real-time factor, {r['batch']} conversation{'s' if r['batch'] > 1 else ''} at once "
                     f"({r['threads']} thread{'s' if r['threads'] > 1 else ''})",
                     f"{r['rtf']:.3f} (step p50 {r['step_ms_p50']:.1f} ms, p90 {r['step_ms_p90']:.1f} ms, max "
                     f"{r['step_ms_max']:.1f} ms; {_pct(r['share_within_frame'])} of frames within 80 ms)"))
    return rows


def report_markdown(results: DialogueResults, examples: int = 5) -> str:
    s = results.summary()
    lines = ["# Dialogue evaluation", "",
             f"Model: `{s['model']}`. {s['conversations']} held-out conversations ({s['audio_seconds'] / 60:.1f} "
             f"min of audio), {s['questions']} questions. Settings: "
             + ", ".join(f"{k} {v}" for k, v in s["settings"].items()) + ".", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in _figure_rows(s)]
    lines += ["", f"Targets (issue 13): at least {TARGETS['text_accuracy']:.0%} right from the text stream, "
              f"{TARGETS['audio_accuracy']:.0%} from the audio; talk-over under {TARGETS['talk_over_share']:.0%} "
              "of the user's lines; every frame within 80 ms with 4 conversations at once.",
              "", "## Accuracy per question family", "", "![accuracy per family](accuracy_per_family.png)", "",
              "| family | questions | text | audio |", "|---|---:|---:|---:|"]
    text_fam = s["accuracy"]["text"]["per_family"]
    audio_fam = s["accuracy"].get("audio", {}).get("per_family", {})
    for family, figures in text_fam.items():
        audio = audio_fam.get(family, {}).get("accuracy")
        lines.append(f"| {family} | {figures['total']} | {_pct(figures['accuracy'])} | "
                     f"{_pct(audio) if family in audio_fam else 'n/a'} |")
    lines += ["", "## Response delay", "", "![delays](delays.png)", ""]
    for title, right in (("Examples of right answers (text stream)", True),
                         ("Examples of wrong answers (text stream)", False)):
        chosen = [q for q in results.questions if q.text.right == right][:examples]
        lines += [f"## {title}", ""]
        if not chosen:
            lines += ["(none)", ""]
            continue
        lines += ["| question | accepted | Moshi wrote | Moshi said (Whisper) |", "|---|---|---|---|"]
        for q in chosen:
            said = "n/a" if q.audio is None else _cell(q.audio.reply or "(nothing)", 60)
            lines.append(f"| {_cell(q.question, 60)} | {_cell(' / '.join(q.answers), 40)} | "
                         f"{_cell(q.text.reply or '(nothing)', 60)} | {said} |")
        lines.append("")
    lines += ["## How it is judged", "",
              f"Reply window: Moshi's words starting from {results.judge.lead_s} s before the question's end to the "
              f"earliest of {results.judge.window_s} s after it and {results.judge.grace_s} s after the user's next "
              "line starts; right when an accepted answer appears in them after normalisation (numbers as words, "
              "punctuation and spelling variants removed; yes/no: the first yes or no decides). Talk-over: a word "
              f"of Moshi (not a backchannel) starting inside a user's line, later than "
              f"{results.judge.talkover_grace_s} s after its start. Delay: the user's last word's end to Moshi's "
              "first word. Definitions in docs/eval.md; every record in results.json.", ""]
    return "\n".join(lines)


def plot_accuracy(results: DialogueResults) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    s = results.summary()["accuracy"]
    families = list(s["text"]["per_family"])
    streams = [k for k in ("text", "audio") if k in s]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(families) + 2), 4))
    x = np.arange(len(families))
    width = 0.8 / max(1, len(streams))
    for i, stream in enumerate(streams):
        values = [(s[stream]["per_family"].get(f, {}).get("accuracy") or 0.0) * 100 for f in families]
        ax.bar(x + (i - (len(streams) - 1) / 2) * width, values, width, label=stream)
    ax.axhline(TARGETS["text_accuracy"] * 100, color="C0", linestyle="--", linewidth=1, label="text target")
    if "audio" in streams:
        ax.axhline(TARGETS["audio_accuracy"] * 100, color="C1", linestyle=":", linewidth=1, label="audio target")
    ax.set_xticks(x, families, rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("answered right (%)")
    ax.set_title(f"Accuracy per question family ({results.summary()['questions']} questions)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return figure_png(fig)


def plot_delays(results: DialogueResults) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    series = {"ground truth": [d.truth for c in results.conversations for d in c.text.delays],
              "Moshi (text)": [d.delay for c in results.conversations for d in c.text.delays if d.delay is not None]}
    if results.has_audio:
        series["Moshi (audio)"] = [d.delay for c in results.conversations if c.audio for d in c.audio.delays
                                   if d.delay is not None]
    values = [v for vs in series.values() for v in vs]
    hi = max([2.0] + values)
    bins = np.linspace(min([-0.1] + values), hi, 40)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, vs in series.items():
        if vs:
            ax.hist(vs, bins=bins, alpha=0.5, label=f"{name} (n={len(vs)})")
    ax.set_xlabel("user's last word end -> Moshi's first word (s)")
    ax.set_ylabel("replies")
    ax.set_title("Response delay")
    ax.legend(fontsize=8)
    return figure_png(fig)


def write_report(results: DialogueResults, out: Path) -> None:
    """Every output into the folder `out`, each file atomically."""
    write_bytes(out / "accuracy_per_family.png", plot_accuracy(results))
    write_bytes(out / "delays.png", plot_delays(results))
    write_text(out / "results.json", report_json(results))
    write_text(out / "report.md", report_markdown(results))
