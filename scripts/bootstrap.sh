#!/usr/bin/env bash
# Create .venv/ at the repository root and install ErasePro with its dev extras (idempotent, quick when done).
# CPU torch where there is no GPU: torch is pinned to 2.13.0, which pip resolves from the configured index
# (on our machines a local CPU wheel); set PIP_EXTRA_INDEX_URL to a CPU wheel index elsewhere if you like.
# Every other dependency comes from pyproject.toml's extras (the one list).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$py" -m venv .venv
fi
stamp=".venv/.erasepro-installed"
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip() { .venv/bin/python -m pip "$@"; }
echo "bootstrap: installing dependencies into .venv (first run takes a few minutes)" >&2
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  pip install -q "torch==2.13.0"
fi
pip install -q -e ".[dev]"
echo "$want" > "$stamp"
