#!/usr/bin/env bash
# The test command: bootstrap .venv, make sure a Redis server answers, run the whole suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
fi
# The console's browser tests drive Debian's chromium (Playwright cannot download browsers here).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test.sh: installing chromium for the browser tests" >&2
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi
# The generated TypeScript client's journey (tests/test_service_typescript.py) runs on Debian's Node; its npm
# packages come from package-lock.json (the test runs `npm ci` when node_modules is missing).
if ! command -v npm >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test.sh: installing nodejs and npm for the TypeScript client test" >&2
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null
fi
if [ ! -d clients/typescript/node_modules ] && command -v npm >/dev/null; then
  (cd clients/typescript && npm ci --no-audit --no-fund >/dev/null)
fi
# One OpenMP thread per process: the suite runs the test process beside workers and servers on 2 cores, and torch's
# spinning OpenMP barriers with 2 threads in each made the whole run ~1.5x slower than on one pinned core
# (stop 31's CI: 1,973 s; the same suite on one core with one thread: 1,301 s). Set it yourself to override.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q "$@"
