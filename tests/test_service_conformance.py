"""Conformance: schemathesis runs against the real service (uvicorn), every phase (examples, coverage, fuzzing,
stateful), every check, a fixed seed and a bounded number of examples - and finds nothing.

The requests go to the fuzz API of :mod:`service_fixtures` (a second uvicorn on a Redis database no worker
reads), so what passes validation is queued and never run; the run's JSON report is kept in the test's
temporary directory. ``ERASEPRO_CONFORMANCE_SEED`` and ``ERASEPRO_CONFORMANCE_EXAMPLES`` change the seed and
the examples per operation (the issue: any seed finds 0 failures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import KEYS, Stack  # noqa: E402

pytest_plugins = ["service_fixtures"]

SEED = int(os.environ.get("ERASEPRO_CONFORMANCE_SEED", "26"))
EXAMPLES = int(os.environ.get("ERASEPRO_CONFORMANCE_EXAMPLES", "10"))  # per operation and phase
CONFIG = Path(__file__).with_name("schemathesis.toml")  # the one exception to the default checks, and why
TIME_LIMIT_S = 900  # a guard against hanging, not a timing assertion


def release_fuzz_tenants(svc: Stack) -> None:
    """The fuzzer's accepted jobs stay queued on the fuzz API (no worker reads its Redis database) and hold the
    tenants' active-job slots; free them so later tests on the shared fuzz API are not refused with 429."""
    import redis

    from erasepro_jobs import store

    fuzz = redis.Redis.from_url(svc.redis_server.url.rsplit("/", 1)[0] + "/1")
    try:
        for tenant in KEYS:
            fuzz.delete(store.k_active(tenant))
    finally:
        fuzz.close()


def run_schemathesis(base_url: str, out: Path, *extra: str) -> tuple[int, str, dict]:
    """``schemathesis run`` on the live document at ``base_url``: exit code, console output, JSON report."""
    report = out / "schemathesis.json"
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", f"{base_url}/openapi.json",
           "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
           "--seed", str(SEED), "--max-examples", str(EXAMPLES), "--generation-database", "none",
           "--workers", "1", "--no-color", "--output-truncate", "false",
           "-H", f"Authorization: Bearer {KEYS['acme']}",
           "--exclude-path", "/readyz",  # 503 by design here: no worker reads the fuzz API's queue
           "--report", "json", "--report-json-path", str(report), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIME_LIMIT_S, cwd=out)
    data = json.loads(report.read_text()) if report.is_file() else {}
    return done.returncode, done.stdout + done.stderr, data


def test_schemathesis_all_phases_all_checks_finds_nothing(svc: Stack, tmp_path: Path) -> None:
    try:
        code, output, _ = run_schemathesis(svc.start_fuzz_api(), tmp_path)
    finally:
        release_fuzz_tenants(svc)
    tail = output[-12000:]
    print(tail)
    assert code == 0, tail
