# Shared by scripts/run.sh and scripts/test.sh: make .venv/ hold torch (CPU build) and openmoshi.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[openmoshi] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip -q --disable-pip-version-check"
# torch first, pinned to the CPU build that torch>=2.4 admits, so pip never picks a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[openmoshi] installing torch (CPU build)" >&2
  $PIP install "torch==2.13.0" 2>/dev/null || $PIP install torch --index-url https://download.pytorch.org/whl/cpu
fi
