"""The worker starts no thread once it serves jobs: a thread created while a job holds the process's RLIMIT_AS
(ERASEPRO_JOB_MEMORY) can find no memory for its stack or thread-local data, and glibc then aborts the whole worker
("cannot allocate memory for thread-local data") - which the retention sweep, once a new thread per due sweep, did
about one run in three of tests/test_security.py::test_job_over_its_limit_fails_alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from erasepro_jobs.settings import Settings
from worker.runtime import Heartbeat, WorkerState


def test_heartbeat_sweeps_retention_without_starting_threads(redis_url: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERASEPRO_DATA_DIR", str(tmp_path))
    state = WorkerState.create(Settings.from_env().replace(redis_url=redis_url), name="erasepro-test-threads")
    heartbeat = Heartbeat(state)
    sweeps: list[float] = []
    monkeypatch.setattr(heartbeat.retention, "sweep_if_due", lambda: sweeps.append(time.monotonic()))
    heartbeat.start()
    try:
        started: list[str] = []
        original = threading.Thread.start

        def noting(self: threading.Thread) -> None:
            started.append(self.name)
            original(self)

        monkeypatch.setattr(threading.Thread, "start", noting)
        for _ in range(3):
            before = len(sweeps)
            heartbeat.sweep_retention()  # what each heartbeat does when its interval has passed
            deadline = time.monotonic() + 5
            while len(sweeps) == before and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(sweeps) > before, "the sweeper did not run the due sweep"
        assert started == [], started
    finally:
        heartbeat.stop()
