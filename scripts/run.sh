#!/usr/bin/env bash
# The main job. With no arguments: `openmoshi demo` (a conversation with the bundled model over a spoken
# question, into ./openmoshi-demo/); otherwise the arguments go to `openmoshi`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
if ! "$VENV/bin/python" -c "import openmoshi, soxr" 2>/dev/null; then
  echo "[openmoshi] installing openmoshi" >&2
  $PIP install -e "$ROOT" 2>&1 | grep -v "^WARNING: Location" >&2 || true
fi
if [ "$#" -eq 0 ]; then set -- demo; fi
exec "$VENV/bin/openmoshi" "$@"
