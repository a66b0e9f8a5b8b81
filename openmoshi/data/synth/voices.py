"""Offline voices by name: which exist, which work here, which the user may speak in; `synthesize` dispatches to
engines.py.

A voice is named `engine:identity` (`festival:cmu_us_slt_arctic_hts`, `flite:rms`, `espeak:en-gb+m3`,
`piper:joe`). Moshi always speaks in MOSHI_VOICE (festival's HTS voice of the CMU ARCTIC speaker slt: clear, and
festival gives exact word times). The user speaks in any other voice; flite's slt is left out (the same speaker
as Moshi), and the SVOX pico voices are refused (kept for evaluation only).
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache

import numpy as np

from openmoshi.audio import SAMPLE_RATE
from openmoshi.data.synth.engines import ENGINES, Speech, Style, VoiceError, tokens

__all__ = ["MOSHI_VOICE", "Speech", "Style", "VoiceError", "candidate_voices", "parse_voice", "resolve_user_voices",
           "synthesize", "tokens", "voice_works", "working"]

MOSHI_VOICE = "festival:cmu_us_slt_arctic_hts"
FESTIVAL_USER = ("kal_diphone", "ked_diphone")
FLITE_USER = ("rms", "awb", "kal16", "kal")  # slt is left out: the same speaker as Moshi's voice
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "Alex", "Andy", "Annie", "adam", "aunty", "belinda", "benjamin", "caleb", "david",
                   "ed", "edward", "grandma", "grandpa", "john", "linda", "max", "Michael", "Mike", "paul",
                   "quincy", "rob", "robert", "steph", "travis", "victor", "zac", "shelby", "norbert", "Lee")
FORBIDDEN = ("pico",)  # SVOX pico voices are kept for evaluation only (issue 13)


def parse_voice(name: str) -> tuple[str, str]:
    if any(bad in name.lower() for bad in FORBIDDEN):
        raise VoiceError(f"{name}: the SVOX pico voices are reserved for evaluation, never for training data")
    engine, sep, ident = name.partition(":")
    if not sep or engine not in ENGINES or not ident:
        raise VoiceError(f"bad voice name {name!r}: expected ENGINE:NAME with ENGINE one of {', '.join(ENGINES)}")
    return engine, ident


def synthesize(voice: str, texts: list[str], styles: list[Style] | None = None) -> list[Speech]:
    """Speak each text in `voice`; raises VoiceError when the voice is missing or fails."""
    engine, ident = parse_voice(voice)
    styles = styles or [Style()] * len(texts)
    if not texts:
        return []
    return ENGINES[engine](ident, texts, styles)


def candidate_voices() -> list[str]:
    """Every user voice this module knows, installed or not."""
    names = [f"festival:{v}" for v in FESTIVAL_USER] + [f"flite:{v}" for v in FLITE_USER] + ["piper:joe"]
    names += [f"espeak:{a}+{v}" for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS]
    return names


@cache
def working(voice: str) -> bool:
    """Whether `voice` is installed and speaks here (one short test sentence)."""
    engine, _ = parse_voice(voice)
    if engine in ("festival", "flite", "espeak") and shutil.which({"espeak": "espeak-ng"}.get(engine, engine)) is None:
        return False
    try:
        (speech,) = synthesize(voice, ["Hello there."])
    except VoiceError:
        return False
    return len(speech.audio) > SAMPLE_RATE // 10 and float(np.abs(speech.audio).max()) > 1e-3


@cache
def _espeak_variants() -> frozenset[str]:
    try:
        out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, timeout=30).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(row.split()[4].removeprefix("!v/") for row in out.splitlines()[1:] if len(row.split()) > 4)


def voice_works(voice: str) -> bool:
    """`working`, but an espeak voice is checked by its accent (spoken once) and its variant's file."""
    engine, ident = parse_voice(voice)
    if engine == "espeak" and "+" in ident:
        accent, variant = ident.split("+", 1)
        return variant in _espeak_variants() and working(f"espeak:{accent}")
    return working(voice)


def resolve_user_voices(spec: str = "all") -> tuple[list[str], list[str]]:
    """The user voices named by `spec` (comma-separated voice names or engine names, or `all`) that work here,
    and those that do not. A voice name that is unknown or forbidden raises VoiceError."""
    wanted: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "all":
            wanted += candidate_voices()
        elif part in ENGINES:
            wanted += [v for v in candidate_voices() if v.startswith(part + ":")]
        else:
            parse_voice(part)
            if part == MOSHI_VOICE or part == "flite:slt":
                raise VoiceError(f"{part} is Moshi's voice (or its speaker): the user must sound different")
            wanted.append(part)
    if not wanted:
        raise VoiceError(f"--voices {spec!r} names no voice")
    wanted = list(dict.fromkeys(wanted))
    good = [v for v in wanted if voice_works(v)]
    return good, [v for v in wanted if v not in good]
