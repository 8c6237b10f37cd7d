"""Service latency benchmark (prints numbers; not a test).

1. ``POST /v1/erasures`` and ``GET /v1/erasures/{id}`` under ``--clients`` concurrent clients on loopback:
   median / p90 / p99 / max latency and throughput. The API runs as its own uvicorn process; for this part it
   talks to a Redis database that no worker reads, so the submitted jobs queue (exactly the API's work: Lua
   record + RQ enqueue) without starting hundreds of solves.
2. End to end on a real worker: one erasure and one generation on the bundled model (a tiny random-weights
   pipeline if the bundled model is not installed), cold (first load) then cached, split into queue wait,
   model load, solve, save and generate, as the worker records them.

    .venv/bin/python benchmarks/service_latency.py [--clients 50] [--requests 1000] [--max-seconds 60]
        [--webhook] [--endpoints N] [--skip-end-to-end]

Bounded: at most ``--requests`` requests per phase and ``--max-seconds`` per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.embedded import free_port, spawn, stop_process  # noqa: E402
from app.http_guard import PROTOCOL  # noqa: E402
from app.serve import LocalService  # noqa: E402
from erasepro_jobs.registry import bundled_available  # noqa: E402
from erasepro_jobs.settings import Settings  # noqa: E402

KEY = "bench-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def summary(name: str, lat: list[float], wall: float, errors: int) -> str:
    ms = [v * 1000 for v in lat]
    return (f"{name:34s} n={len(ms):5d}  median {statistics.median(ms):7.2f} ms  p90 {pct(ms, 90):7.2f} ms  "
            f"p99 {pct(ms, 99):7.2f} ms  max {max(ms):7.2f} ms  {len(ms) / wall:7.1f} req/s  errors {errors}")


async def load(base: str, clients: int, total: int, max_s: float, make) -> tuple[list[float], float, int, list]:
    """``clients`` tasks issue requests (``make(client, i)``) until ``total`` are done or ``max_s`` passes."""
    latencies: list[float] = []
    results: list = []
    errors = 0
    counter = iter(range(total))
    deadline = time.perf_counter() + max_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=AUTH, limits=limits, timeout=60) as client:
        async def one_client() -> None:
            nonlocal errors
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                r = await make(client, i)
                latencies.append(time.perf_counter() - t0)
                if r.status_code >= 400:
                    errors += 1
                else:
                    results.append(r)

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return latencies, wall, errors, results


def prepare_model(tmp: Path) -> tuple[str, Path | None]:
    if bundled_available():
        return "bundled", None
    path = tmp / "tiny"
    code = ("import sys\nfrom erasepro_core.pipeline import save_pipeline\nfrom erasepro_core.tiny import "
            "tiny_sd_pipeline\nsave_pipeline(tiny_sd_pipeline(seed=0), sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True)
    registry = tmp / "models.toml"
    registry.write_text(f'[models.tiny]\npath = "{path}"\n', encoding="utf-8")
    return "tiny", registry


def wait_job(client: httpx.Client, job_id: str, max_s: float = 1800) -> dict:
    end = time.monotonic() + max_s
    while time.monotonic() < end:
        view = client.get(f"/v1/erasures/{job_id}").json()
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
        time.sleep(0.05)
    raise TimeoutError(job_id)


def end_to_end(base: str, model: str, steps: int) -> None:
    spec = {"base_model": model, "edits": [{"target": "circle", "anchor": "square"}]}
    gen = {"prompt": "a red circle", "seed": 0, "steps": steps}
    with httpx.Client(base_url=base, headers=AUTH, timeout=1800) as c:
        for label in ("cold", "cached"):
            t0 = time.perf_counter()
            job = c.post("/v1/erasures", json=spec).json()  # no Idempotency-Key: two separate jobs
            view = wait_job(c, job["id"])
            t_erase = time.perf_counter() - t0
            if view["status"] != "succeeded":
                print(f"  erasure {label}: {view['status']}: {view.get('error')}")
                return
            t1 = time.perf_counter()
            r = c.post(f"/v1/erasures/{job['id']}/generate", json=gen, params={"wait": 1800})
            t_gen = time.perf_counter() - t1
            gid = r.headers.get("x-erasepro-generation")
            gt = c.get(f"/v1/generations/{gid}").json().get("timings") or {} if gid else {}
            t = view["timings"] or {}
            print(f"  {label:6s} erasure on {t.get('device', '?')}: total {t_erase:6.2f} s = "
                  f"queue wait {t.get('queue_wait_s') or 0:.3f} + load {t.get('load_s', 0):.3f} + "
                  f"solve {t.get('solve_s', 0):.3f} + save {t.get('save_s', 0):.3f} (+ polling/HTTP)")
            print(f"  {label:6s} generate ({steps} steps): total {t_gen:6.2f} s = load {gt.get('load_s', 0):.3f} + "
                  f"generate {gt.get('generate_s', 0):.3f} (+ queue, PNG, HTTP)   status {r.status_code}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=1000, help="requests per load phase (upper bound)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time bound per load phase")
    ap.add_argument("--steps", type=int, default=25, help="sampling steps of the end-to-end generation")
    ap.add_argument("--webhook", action="store_true",
                    help="every erasure posted names a webhook (a receiver on loopback): the submit path then also "
                         "queues a delivery per event")
    ap.add_argument("--endpoints", type=int, default=0,
                    help="register this many tenant webhook endpoints (a receiver on loopback) first: each event "
                         "of every erasure is then also queued for each of them")
    ap.add_argument("--skip-end-to-end", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="erasepro-bench-"))
    model, registry = prepare_model(tmp)
    env_extra = {"ERASEPRO_API_KEYS": f"bench:{KEY}", "ERASEPRO_DATA_DIR": str(tmp / "data"),
                 "ERASEPRO_TENANT_MAX_ACTIVE": "bench:1000000",  # the load test queues every job it posts
                 "ERASEPRO_WEBHOOK_ALLOW_PRIVATE": "1"}
    if registry:
        env_extra["ERASEPRO_BASE_MODELS"] = str(registry)
    os.environ.update(env_extra)
    settings = Settings.from_env().replace(redis_url=None)
    service = LocalService(settings, workers=1, persist=False)
    api = None
    try:
        settings = service.start_backend()
        port = free_port()
        env = {**os.environ, "REDIS_URL": settings.redis_url.rsplit("/", 1)[0] + "/1",
               "PYTHONPATH": str(ROOT)}
        api = spawn([sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--log-level", "warning",
                     "--no-access-log", "--http", PROTOCOL], env=env, cwd=str(ROOT))
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(f"ErasePro service latency: {args.clients} concurrent clients on loopback, model {model!r}, "
              f"{os.cpu_count()} CPUs")
        body = {"base_model": model, "edits": [{"target": "circle", "anchor": "square"}]}
        if args.webhook or args.endpoints:
            receiver = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), http.server.BaseHTTPRequestHandler)
            threading.Thread(target=receiver.serve_forever, daemon=True).start()
            hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        if args.webhook:
            body["webhook"] = hook
            print("webhooks on: every erasure names a loopback receiver")
        for i in range(args.endpoints):
            made = httpx.post(f"{base}/v1/webhook-endpoints", headers=AUTH, json={"url": f"{hook}/{i}"})
            made.raise_for_status()
        if args.endpoints:
            print(f"{args.endpoints} tenant webhook endpoints registered (every event queued for each)")

        async def post(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.post("/v1/erasures", json=body)

        lat, wall, errors, results = asyncio.run(load(base, args.clients, args.requests, args.max_seconds, post))
        print(summary("POST /v1/erasures", lat, wall, errors))
        ids = [r.json()["id"] for r in results]

        async def get(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.get(f"/v1/erasures/{ids[i % len(ids)]}")

        lat, wall, errors, _ = asyncio.run(load(base, args.clients, args.requests, args.max_seconds, get))
        print(summary("GET /v1/erasures/{id}", lat, wall, errors))
        stop_process(api, grace_s=5, second_signal_s=2)
        api = None
        if args.skip_end_to_end:
            return 0

        # end to end on the real worker (database 0)
        api = spawn([sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--log-level", "warning",
                     "--no-access-log", "--http", PROTOCOL], env={**env, "REDIS_URL": settings.redis_url},
                    cwd=str(ROOT))
        for _ in range(600):
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        print(f"end to end on {model!r} (one worker):")
        end_to_end(base, model, args.steps)
    finally:
        if api is not None:
            stop_process(api, grace_s=5, second_signal_s=2)
        service.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
