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
# --- Debian packages the tests use, installed where missing (one apt-get for all; idempotent):
#   chromium: the web page's test (tests/server/test_web_page.py), driven by Playwright from the [test] extra;
#     Playwright's own browser downloads are never used (the test launches /usr/bin/chromium).
#   festival + festvox-us-slt-hts (Moshi's voice) + festvox-kallpc16k, flite: the synthetic conversations
#     (tests/data/test_synth*.py, docs/synth.md).
#   espeak-ng: speaks the test sentence of tests/eval (codec evaluation).
#   nginx: tests/server/test_nginx.py, two `openmoshi serve` replicas behind it (the test starts its own nginx
#     on free ports and stops it).
APT_NEEDED=""
[ -x /usr/bin/chromium ] || APT_NEEDED="$APT_NEEDED chromium"
command -v festival >/dev/null || APT_NEEDED="$APT_NEEDED festival"
[ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] || APT_NEEDED="$APT_NEEDED festvox-us-slt-hts"
[ -d /usr/share/festival/voices/english/kal_diphone ] || APT_NEEDED="$APT_NEEDED festvox-kallpc16k"
command -v flite >/dev/null || APT_NEEDED="$APT_NEEDED flite"
command -v espeak-ng >/dev/null || APT_NEEDED="$APT_NEEDED espeak-ng"
{ command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } || APT_NEEDED="$APT_NEEDED nginx"
if [ -n "$APT_NEEDED" ]; then
  echo "[openmoshi] installing Debian packages:$APT_NEEDED" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q $APT_NEEDED >&2 || { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q $APT_NEEDED >&2; }
fi
# --- end of the Debian packages
"$VENV/bin/python" -m ruff check "$ROOT"
cd "$ROOT"
export NO_TORCH_COMPILE=1
exec "$VENV/bin/python" -m pytest -q "$@"
