"""Speak a planned conversation and lay it on a stereo timeline: channel 0 = Moshi, channel 1 = the user.

`conversation(seed, split, index, moshi_voice, user_voices)` is the whole recipe for one conversation: everything
random in it (the plan, the user's voice and sound, the timing) comes from generators seeded by
(seed, split, index) alone, so a conversation is the same whatever the worker or the order it is made in.

Word times: every line's words keep the synthesiser's times, shifted to where the line is placed (the user's
also scaled by the tape factor). When the user interrupts, Moshi's audio is faded out over 20 ms from its stop
time and its words are cut: a word that had begun at least 40 ms before the stop is kept, ending at the stop;
later words are dropped.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass

import numpy as np

from openmoshi.audio import SAMPLE_RATE
from openmoshi.data.synth import effects
from openmoshi.data.synth.script import MOSHI, USER, Line, plan
from openmoshi.data.synth.voices import Speech, Style, synthesize, tokens

SPEAKER_LABEL = {MOSHI: "SPEAKER_MAIN", USER: "SPEAKER_USER"}
MOSHI_PEAK_DB = -3.0
FADE_S = 0.02
MIN_KEPT_S = 0.04
ENGINE_WEIGHTS = {"espeak": 0.3, "flite": 0.25, "festival": 0.2, "piper": 0.25}
SAME_SPEAKER_GAP_S = 0.1  # least silence between two lines of one speaker
GENERATOR_VERSION = 2  # 2: a speaker's lines never overlap each other


@dataclass
class Placed:
    line: Line
    speech: Speech
    offset: float  # where the audio starts on the timeline (s)
    times: list[tuple[float, float]]  # absolute word times
    stop: float | None = None  # Moshi cut short here


def conversation_seed(seed: int, split: str, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"openmoshi-synth/{seed}/{split}/{index}".encode()).digest()[:8], "big")


def pick_user_voice(rng: random.Random, user_voices: list[str]) -> str:
    """An engine first (weighted, so espeak's many variants do not crowd out the others), then one of its voices."""
    by_engine: dict[str, list[str]] = {}
    for v in user_voices:
        by_engine.setdefault(v.split(":", 1)[0], []).append(v)
    engines = sorted(by_engine)
    engine = rng.choices(engines, weights=[ENGINE_WEIGHTS.get(e, 0.1) for e in engines])[0]
    return rng.choice(by_engine[engine])


def _word_after(times: list[tuple[float, float]], text: str, frac: float) -> int:
    """The index of a word about `frac` of the way through, preferring one that ends a phrase."""
    toks = tokens(text)
    target = min(len(times) - 1, max(0, int(round(frac * len(times)))))
    ends = [i for i, t in enumerate(toks[:-1]) if t[-1] in ",.?!"]
    near = [i for i in ends if abs(i - target) <= 3]
    return min(near, key=lambda i: abs(i - target)) if near else min(target, len(times) - 2) if len(times) > 1 else 0


def _layout(lines: list[Line], spoken: list[Speech], tape_factor: float, rng: random.Random) -> list[Placed]:
    placed: list[Placed] = []
    floor: Placed | None = None  # the last line that took the floor
    last_main: dict[str, Placed] = {}
    busy: dict[str, float] = {}  # end of each speaker's last word so far
    for line, speech in zip(lines, spoken, strict=True):
        scale = 1.0 / tape_factor if line.speaker == USER else 1.0
        rel = [(a * scale, b * scale) for a, b in speech.times]
        if line.timing == "after" or floor is None:
            floor_end = floor.times[-1][1] if floor and floor.times else 0.0
            first = floor_end + line.gap
        else:
            anchor = last_main.get(MOSHI if line.speaker == USER else USER) or floor
            k = _word_after(anchor.times, anchor.line.text, line.frac)
            if line.timing == "during":
                # not over this speaker's previous line (two backchannels at the same word): a later word
                while k < len(anchor.times) - 2 and anchor.times[k][1] < busy.get(line.speaker, 0.0) + 0.3:
                    k += 1
                first = anchor.times[k][1] + rng.uniform(0.05, 0.3)
            else:  # interrupt: the user starts near the end of word k; Moshi stops `reaction` later
                first = anchor.times[k][1] + rng.uniform(-0.1, 0.15)
                if anchor.line.speaker == MOSHI:
                    anchor.stop = first + line.reaction
                    busy[MOSHI] = anchor.stop  # its words end there
        # never over this speaker's own last words: a backchannel near the end of the other's line can run
        # past the floor's end, and the same speaker's next line would start inside it (seen in 7 of 2197)
        first = max(first, busy.get(line.speaker, -SAME_SPEAKER_GAP_S) + SAME_SPEAKER_GAP_S)
        offset = max(0.0, first - rel[0][0])
        item = Placed(line, speech, offset, [(a + offset, b + offset) for a, b in rel])
        placed.append(item)
        busy[line.speaker] = max(busy.get(line.speaker, 0.0), item.times[-1][1])
        if line.timing != "during":
            floor = item
            last_main[line.speaker] = item
    for item in placed:  # cut Moshi where the user interrupted
        if item.stop is not None:
            item.times = [(a, min(b, item.stop)) for a, b in item.times if a < item.stop - MIN_KEPT_S]
    return placed


def conversation(seed: int, split: str, index: int, moshi_voice: str, user_voices: list[str],
                 exchanges: tuple[int, int] = (2, 6)) -> tuple[np.ndarray, dict]:
    """One conversation: (stereo float32 [T, 2] at 24 kHz, its sidecar dict with "alignments" and details)."""
    cseed = conversation_seed(seed, split, index)
    rng = random.Random(cseed)
    nrng = np.random.default_rng(cseed)
    lines = plan(rng, split, exchanges)
    user_voice = pick_user_voice(rng, user_voices)
    channel = effects.draw_channel(nrng)
    base_rate = rng.uniform(0.85, 1.2)
    styles = {MOSHI: [], USER: []}
    for line in lines:
        styles[line.speaker].append(Style() if line.speaker == MOSHI else Style(base_rate * rng.uniform(0.95, 1.05)))
    texts = {s: [ln.text for ln in lines if ln.speaker == s] for s in (MOSHI, USER)}
    voice = {MOSHI: moshi_voice, USER: user_voice}
    said = {s: iter(synthesize(voice[s], texts[s], styles[s])) for s in (MOSHI, USER)}
    spoken = [next(said[ln.speaker]) for ln in lines]
    placed = _layout(lines, spoken, channel.tape, rng)
    ir = effects.room_response(nrng, channel.rt60) if channel.rt60 else None

    tracks: dict[str, list[tuple[int, np.ndarray]]] = {MOSHI: [], USER: []}
    for item in placed:
        audio = item.speech.audio
        if item.line.speaker == USER:
            audio = effects.tape(audio, channel.tape)
            audio = effects.set_peak(audio, channel.gain_db + rng.uniform(-2.0, 2.0))
            if ir is not None:
                audio = effects.add_room(audio, ir, channel.wet)
        else:
            audio = effects.set_peak(audio, MOSHI_PEAK_DB)
            if item.stop is not None:
                cut = max(0, int(round((item.stop - item.offset) * SAMPLE_RATE)))
                fade = int(FADE_S * SAMPLE_RATE)
                audio = audio[: cut + fade].copy()
                ramp = np.linspace(1.0, 0.0, fade, dtype=np.float32)[: max(0, len(audio) - cut)]
                audio[cut: cut + len(ramp)] *= ramp
        tracks[item.line.speaker].append((int(round(item.offset * SAMPLE_RATE)), audio))
    end = max(start + len(a) for t in tracks.values() for start, a in t)
    total = end + int(rng.uniform(0.5, 2.0) * SAMPLE_RATE)
    stereo = np.zeros((total, 2), np.float32)
    for ch, speaker in enumerate((MOSHI, USER)):
        for start, audio in tracks[speaker]:
            stereo[start: start + len(audio), ch] += audio
    stereo[:, 1] += effects.noise(nrng, total, channel.noise_db, channel.noise_colour)
    np.clip(stereo, -1.0, 1.0, out=stereo)
    return stereo, _sidecar(placed, total, seed, split, index, voice, channel)


def _sidecar(placed: list[Placed], total: int, seed: int, split: str, index: int, voice: dict,
             channel: effects.Channel) -> dict:
    words, turns, questions = [], [], []
    for item in placed:
        label = SPEAKER_LABEL[item.line.speaker]
        toks = tokens(item.line.text)
        for tok, (a, b) in zip(toks, item.times, strict=False):  # zip stops at the cut
            words.append([tok, [round(a, 3), round(b, 3)], label])
        spoken = " ".join(toks[: len(item.times)])
        turn = {"speaker": label, "kind": item.line.kind, "timing": item.line.timing, "text": spoken,
                "start": round(item.times[0][0], 3) if item.times else None,
                "end": round(item.times[-1][1], 3) if item.times else None, "exact_times": item.speech.exact}
        if item.stop is not None:
            turn["interrupted_at"] = round(item.stop, 3)
            turn["planned_text"] = item.line.text
        turns.append(turn)
    for i, item in enumerate(placed):
        q = item.line.question
        if q is None:
            continue
        reply = next((p for p in placed[i + 1:] if p.line.speaker == MOSHI and p.line.kind == "answer"), None)
        questions.append({"family": q.family, "key": q.key, "question": q.text, "answers": list(q.answers),
                          "reply": q.reply, "asked_end": round(item.times[-1][1], 3),
                          "reply_start": round(reply.times[0][0], 3) if reply and reply.times else None})
    words.sort(key=lambda w: (w[1][0], w[1][1]))
    return {"alignments": words, "duration": round(total / SAMPLE_RATE, 3), "sample_rate": SAMPLE_RATE,
            "turns": turns, "questions": questions, "voice": voice, "user_channel": asdict(channel),
            "seed": seed, "split": split, "index": index, "generator": f"openmoshi-synth/{GENERATOR_VERSION}"}
