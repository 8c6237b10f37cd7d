"""What the heavy lane costs in memory: the resident set of a worker and of its heavy lane's process.

A worker serving ``erase`` starts a second process for the ``heavy`` queue (worker/main.py). Each run starts the
whole service afresh (a private redis-server, ``python -m worker --queues erase,generate,webhooks`` with its heavy
lane, the API under uvicorn, the bundled model) and reads ``/proc/{pid}/smaps_rollup`` of both worker processes
(RSS, and PSS: shared pages divided among the processes sharing them) at three moments:

1. ``idle``: both heartbeats seen, nothing run yet (interpreter, torch, diffusers imported);
2. ``after erasure``: one erasure ran in the worker (its model is loaded and cached there);
3. ``after export``: one diffusers export ran in the heavy lane (the lane loaded its own copy of the model).

``python benchmarks/worker_lanes_rss.py --runs 3`` prints mean and 95 % interval (Student t) per moment and
process and writes ``benchmarks/results/worker_lanes_rss.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from app.embedded import EmbeddedRedis, free_port, spawn, stop_process

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key-0123456789abcdef0123"
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def rollup(pid: int) -> dict[str, float]:
    """RSS and PSS of ``pid`` in MiB (``/proc/{pid}/smaps_rollup``)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss"):
            out[name.lower()] = int(rest.split()[0]) / 1024
    return out


def wait(predicate: Callable[[], Any], what: str, deadline_s: float = 900.0) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(what)


def one_run(tmp: Path) -> dict[str, dict[str, dict[str, float]]]:
    server = EmbeddedRedis(tmp / "redis", persist=False).start()
    env = {**os.environ, "REDIS_URL": server.url, "ERASEPRO_DATA_DIR": str(tmp / "data"), "ERASEPRO_BUNDLED": "1",
           "ERASEPRO_API_KEYS": f"bench:{KEY}", "ERASEPRO_RATE_LIMIT": "0", "ERASEPRO_RATE_LIMIT_ADDRESS": "0",
           "PYTHONPATH": str(ROOT)}
    worker = spawn([sys.executable, "-m", "worker", "--queues", "erase,generate,webhooks"], env=env,
                   log_path=tmp / "worker.log", cwd=str(ROOT))
    port = free_port()
    api = spawn([sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--log-level", "warning"],
                env=env, log_path=tmp / "api.log", cwd=str(ROOT))
    r = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        wait(lambda: r.zcard("erasepro:workers") == 2, "both heartbeats (the worker's and its heavy lane's)")
        lane_pid = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == worker.pid)
        pids = {"worker": worker.pid, "heavy lane": lane_pid}
        wait(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, "the API")
        time.sleep(5)  # let both settle after start
        out = {"idle": {k: rollup(p) for k, p in pids.items()}}
        c = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        job = c.post("/v1/erasures", json={"base_model": "bundled", "edits": [{"target": "circle",
                                                                               "anchor": "square"}]}).json()["id"]
        status = wait(lambda: (s := c.get(f"/v1/erasures/{job}").json()["status"]) in ("succeeded", "failed") and s,
                      "the erasure")
        assert status == "succeeded", status
        out["after erasure"] = {k: rollup(p) for k, p in pids.items()}
        wait(lambda: c.get(f"/v1/erasures/{job}/checkpoint", params={"format": "diffusers"}).status_code == 200,
             "the export")
        out["after export"] = {k: rollup(p) for k, p in pids.items()}
        c.close()
        return out
    finally:
        r.close()
        stop_process(api, grace_s=10)
        stop_process(worker, grace_s=20)
        server.stop()


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def interval(xs: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % interval (Student t; 0 for one run)."""
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return mean, 0.0
    return mean, T975.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / len(xs) ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "worker_lanes_rss.json")
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="lanes-rss-") as tmp:
            runs.append(one_run(Path(tmp)))
        print(f"run {i + 1}/{args.runs}: {json.dumps(runs[-1])}", flush=True)
    summary = {}
    print(f"\n{'moment':16} {'process':11} {'RSS MiB (95% CI)':>22} {'PSS MiB (95% CI)':>22}")
    for moment in runs[0]:
        for proc in runs[0][moment]:
            row = {m: interval([run[moment][proc][m] for run in runs]) for m in ("rss", "pss")}
            summary[f"{moment} / {proc}"] = row
            print(f"{moment:16} {proc:11} {row['rss'][0]:12.0f} ± {row['rss'][1]:<7.0f} "
                  f"{row['pss'][0]:12.0f} ± {row['pss'][1]:<7.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs, "summary": summary, "n": len(runs)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
