#!/usr/bin/env bash
# The main job: bootstrap .venv, then run the ErasePro demo on the embedded defaults (bundled model,
# embedded Redis, one worker): submit an erasure, download it, write before/after images.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
exec .venv/bin/erasepro demo "$@"
