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
# --- nginx (Debian's package) for tests/server/test_nginx.py: two `openmoshi serve` replicas behind it.
# Installed only where missing (idempotent); the test starts its own nginx on free ports and stops it.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "[openmoshi] installing nginx for the load-balancer test" >&2
  apt-get install -y -q nginx >&2 || { apt-get update -q >&2 && apt-get install -y -q nginx >&2; } \
    || echo "[openmoshi] could not install nginx: tests/server/test_nginx.py will be skipped" >&2
fi
# --- end nginx
"$VENV/bin/python" -m ruff check "$ROOT"
cd "$ROOT"
export NO_TORCH_COMPILE=1
exec "$VENV/bin/python" -m pytest -q "$@"
