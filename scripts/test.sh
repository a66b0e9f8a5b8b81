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
# --- the web page's test (tests/server/test_web_page.py): Debian's chromium, driven by Playwright from the
# [test] extra. Playwright's own browser downloads are never used (the test launches /usr/bin/chromium).
if [ ! -x /usr/bin/chromium ]; then
  echo "[openmoshi] installing Debian's chromium (for the web page's test)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q chromium >&2 || { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q chromium >&2; }
fi
# --- end of the web page's block
"$VENV/bin/python" -m ruff check "$ROOT"
cd "$ROOT"
export NO_TORCH_COMPILE=1
exec "$VENV/bin/python" -m pytest -q "$@"
