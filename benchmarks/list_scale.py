"""``GET /v1/erasures`` at scale (prints numbers; not a test).

One tenant with ``--jobs`` erasures: half live records in Redis (queued, a third of them with metadata
``team=red``), half finished checkpoints in the artifact store (the local data dir) with no record, as after a
Redis flush. The API runs in-process (FastAPI TestClient) on a private ``redis-server``; the timings are one
request each, median of ``--repeat``:

- first list request (on the bounded version: the one-off rebuild of the index from the artifact store),
- ``?limit=20`` (a first page),
- ``?limit=20&metadata[team]=nobody`` (a filter matching none: one request; and walking every page to the end),
- ``?limit=20&status=running`` (matching none).

    .venv/bin/python benchmarks/list_scale.py [--jobs 5000] [--repeat 5]

Runs against whatever ``app`` is importable: point PYTHONPATH at another checkout to compare versions.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.embedded import EmbeddedRedis
from app.main import create_app
from erasepro_jobs import store
from erasepro_jobs.lifecycle import JobRef, Lifecycle
from erasepro_jobs.settings import Settings
from erasepro_jobs.storage import FileStorage

TENANT, KEY = "bulk", "bench-key-bulk-0123456789abcdef"


def populate(lc: Lifecycle, storage: FileStorage, n: int) -> None:
    """``n`` erasures of ``TENANT``, created a second apart: even ones as records, odd ones as checkpoints."""
    t0 = time.time() - n
    for i in range(n):
        jid = store.new_job_id()
        if i % 2:
            store.write_manifest(storage, TENANT, jid, {"id": jid, "tenant": TENANT, "created_at": t0 + i,
                                                        "files": {}, "spec": {"method": "erasepro"}})
        else:
            meta = {"team": "red"} if i % 3 == 0 else {}
            lc.create(JobRef(jid, "erasure", TENANT), fields={"base_model": "tiny", "metadata": meta},
                      created=t0 + i, idem_key=None, body_hash="", idem_ttl_s=60, limit=0, data={})


def timed(c: TestClient, params: dict[str, str], repeat: int) -> tuple[float, int]:
    """Median seconds of one request, and its item count."""
    times, count = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        r = c.get("/v1/erasures", params=params)
        times.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
        count = len(r.json()["items"])
    return statistics.median(times), count


def walk(c: TestClient, params: dict[str, str]) -> tuple[float, int, int]:
    """Seconds to follow ``next_cursor`` to the end, pages, items."""
    t, pages, items, cursor = time.perf_counter(), 0, 0, None
    while True:
        page = c.get("/v1/erasures", params={**params, **({"cursor": cursor} if cursor else {})}).json()
        pages, items, cursor = pages + 1, items + len(page["items"]), page["next_cursor"]
        if not cursor:
            return time.perf_counter() - t, pages, items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="erasepro-listbench-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", persist=False)
        (Path(tmp) / "redis").mkdir(mode=0o700)
        server.start()
        try:
            data = Path(tmp) / "data"
            storage = FileStorage(data)
            lc = Lifecycle(server.client(decode_responses=True), data, storage)
            t = time.perf_counter()
            populate(lc, storage, args.jobs)
            print(f"{args.jobs} jobs created in {time.perf_counter() - t:.1f} s")
            settings = Settings(redis_url=server.url, data_dir=data, api_keys_env=f"{TENANT}:{KEY}",
                                include_bundled=False)
            with TestClient(create_app(settings), headers={"Authorization": f"Bearer {KEY}"}) as c:
                t = time.perf_counter()
                assert c.get("/v1/erasures", params={"limit": "20"}).status_code == 200
                print(f"first request:                     {1000 * (time.perf_counter() - t):8.1f} ms")
                for label, params in (("limit=20", {"limit": "20"}),
                                      ("metadata[team]=nobody", {"limit": "20", "metadata[team]": "nobody"}),
                                      ("status=running", {"limit": "20", "status": "running"})):
                    s, n = timed(c, params, args.repeat)
                    print(f"one request, {label:22s}{1000 * s:8.1f} ms  ({n} items)")
                s, pages, n = walk(c, {"limit": "20", "metadata[team]": "nobody"})
                print(f"walk to the end, metadata[team]=nobody: {1000 * s:8.1f} ms in {pages} pages ({n} items)")
                s, pages, n = walk(c, {"limit": "100"})
                print(f"walk to the end, limit=100:        {1000 * s:8.1f} ms in {pages} pages ({n} items)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
