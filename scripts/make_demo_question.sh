#!/usr/bin/env bash
# Regenerate the demo's spoken question, openmoshi/assets/question.wav (24 kHz mono 16-bit) and its words,
# openmoshi/assets/question.txt, with one of the synthetic data's USER voices (openmoshi/data/synth: never
# Moshi's festival slt, never pico). A second of silence before and after, so Moshi answers after it.
#
#   scripts/make_demo_question.sh [VOICE [OUT_DIR]]    (default flite:rms into openmoshi/assets; flite: Debian's
#                                                       `flite`, or the voice's engine, docs/synth.md)
#
# flite is deterministic: the same flite gives the same bytes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${OPENMOSHI_PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
cd "$ROOT"
"$PY" - "${1:-flite:rms}" "${2:-openmoshi/assets}" <<'PYEOF'
import sys
from pathlib import Path

import numpy as np

from openmoshi.audio import SAMPLE_RATE, write_wav
from openmoshi.data.synth.voices import MOSHI_VOICE, VoiceError, synthesize
from openmoshi.io_safety import write_text

voice, out = sys.argv[1], Path(sys.argv[2])
if voice == MOSHI_VOICE or voice == "flite:slt":
    sys.exit(f"{voice} is Moshi's voice; the question is the user's (pick a user voice)")
lines = ["Hi there.", "What is two plus three?"]  # a greeting and a question of the training split (add:2:3)
try:
    speech = synthesize(voice, lines)
except VoiceError as err:
    sys.exit(f"make_demo_question: {err}")
silence = lambda s: np.zeros(round(s * SAMPLE_RATE), dtype=np.float32)  # noqa: E731
parts = [silence(1.0)]
for i, s in enumerate(speech):
    parts += [s.audio, silence(1.0 if i == len(speech) - 1 else 0.5)]
audio = np.concatenate(parts)
audio *= 0.5 / max(1e-6, float(np.abs(audio).max()))  # peak -6 dBFS
write_wav(out / "question.wav", audio, SAMPLE_RATE)
write_text(out / "question.txt", " ".join(lines) + "\n")
print(f"{out / 'question.wav'}: {len(audio) / SAMPLE_RATE:.2f} s, {voice}")
PYEOF
