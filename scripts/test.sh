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
# --- synthetic conversations (tests/data/test_synth*.py, docs/synth.md): the offline voices the tests use ------
# festival with Moshi's voice (festvox-us-slt-hts) and kal (festvox-kallpc16k), and flite; idempotent.
SYNTH_APT="festival festvox-us-slt-hts festvox-kallpc16k flite"
if ! command -v festival >/dev/null || ! command -v flite >/dev/null \
    || [ ! -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] \
    || [ ! -d /usr/share/festival/voices/english/kal_diphone ]; then
  echo "[openmoshi] installing $SYNTH_APT (apt)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q $SYNTH_APT >&2 \
    || { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q $SYNTH_APT >&2; }
fi
# --- end of the synthetic-conversation block ---------------------------------------------------------------
"$VENV/bin/python" -m ruff check "$ROOT"
cd "$ROOT"
export NO_TORCH_COMPILE=1
exec "$VENV/bin/python" -m pytest -q "$@"
