"""``erasepro demo``: the whole service in one command.

Starts the service on the embedded defaults (embedded Redis, one worker process, the API on loopback),
submits an erasure of the bundled model over REST, shows its progress, downloads the checkpoint (checking its
sha256 against the ETag), generates before/after images for a few prompts, writes them side by side into one
PNG, prints where everything is, and shuts everything down.

When the bundled model is not installed it falls back to a tiny random-weights pipeline saved into the data
dir, and says so (its images are noise: the demo then shows the plumbing, not the erasure).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from erasepro_jobs.settings import Settings, redact_url

DEFAULT_TARGETS = ["circle"]
DEFAULT_ANCHORS = ["square"]
DEFAULT_PROMPTS = ["a red circle", "a large blue circle", "a green square", "a yellow triangle"]
TINY_NAME = "tiny-demo"


def _say(msg: str) -> None:
    print(f"erasepro demo: {msg}", flush=True)


def ensure_demo_model(settings: Settings) -> tuple[str, Settings, str | None]:
    """``(model name, settings, note)``: the bundled model, or a tiny pipeline written into the data dir."""
    from erasepro_jobs.registry import bundled_available

    if bundled_available() and settings.include_bundled:
        return "bundled", settings, None
    model_dir = settings.data_dir / "models" / TINY_NAME
    if not (model_dir / "model_index.json").is_file():
        code = ("import sys\nfrom erasepro_core.pipeline import save_pipeline\n"
                "from erasepro_core.tiny import tiny_sd_pipeline\n"
                "save_pipeline(tiny_sd_pipeline(seed=0), sys.argv[1])\n")
        subprocess.run([sys.executable, "-c", code, str(model_dir)], check=True, capture_output=True)
    registry = settings.data_dir / "demo-models.toml"
    registry.write_text(f'[models.{TINY_NAME}]\npath = "{model_dir}"\nfamily = "sd1"\n'
                        'description = "tiny random-weights pipeline (demo fallback)"\n', encoding="utf-8")
    os.environ["ERASEPRO_BASE_MODELS"] = str(registry)  # the worker reads the same registry
    note = (f"the bundled model is not installed here: using a tiny random-weights pipeline ({model_dir}); "
            "its images are noise, so the demo shows the service, not the erasure")
    return TINY_NAME, settings.replace(base_models_file=registry), note


def _progress_line(view: dict[str, Any]) -> str:
    p = view.get("progress") or {}
    frac = float(p.get("fraction") or 0.0)
    bar = "#" * int(round(30 * frac))
    return f"  [{bar:<30s}] {100 * frac:5.1f}%  {view['status']:<9s} {p.get('stage') or '':<24s}"[:90]


def _image(client: Any, url: str, body: dict[str, Any], timeout_s: float) -> Any:
    """POST a generation; when it answers 202 (it ran past the server's wait limit), poll its images."""
    r = client.post(url, json=body, params={"wait": 600})
    deadline = time.monotonic() + timeout_s
    while r.status_code == 202 and time.monotonic() < deadline:
        time.sleep(1.0)
        r = client.get(f"/v1/generations/{r.json()['id']}/images")
    return r


def side_by_side(rows: list[tuple[str, bytes, bytes]], path: Path, min_px: int = 128) -> Path:
    """One PNG: a row per prompt with its label, the base image and the edited image."""
    from PIL import Image, ImageDraw

    pairs = [(label, Image.open(io.BytesIO(a)).convert("RGB"), Image.open(io.BytesIO(b)).convert("RGB"))
             for label, a, b in rows]
    w, h = pairs[0][1].size
    scale = max(1, -(-min_px // max(w, h)))
    cw, ch = w * scale, h * scale
    label_w, pad, head = 200, 8, 24
    canvas = Image.new("RGB", (label_w + 2 * cw + 3 * pad, head + len(pairs) * (ch + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((label_w + pad, 6), "before (base)", fill="black")
    draw.text((label_w + 2 * pad + cw, 6), "after (erased)", fill="black")
    for i, (label, a, b) in enumerate(pairs):
        y = head + i * (ch + pad)
        draw.text((pad, y + ch // 2 - 6), label[:40], fill="black")
        canvas.paste(a.resize((cw, ch), Image.NEAREST), (label_w + pad, y))
        canvas.paste(b.resize((cw, ch), Image.NEAREST), (label_w + 2 * pad + cw, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def run_demo(args: argparse.Namespace) -> int:
    """The demo (see the module docstring); returns an exit code."""
    import httpx

    from app.embedded import free_port
    from app.serve import LocalService

    settings = Settings.from_env()
    targets = args.target or DEFAULT_TARGETS
    anchors = args.anchor or (DEFAULT_ANCHORS if not args.target else [""] * len(targets))
    if len(anchors) != len(targets):
        _say("give one --anchor per --target (or none)")
        return 2
    prompts = args.prompt or DEFAULT_PROMPTS
    key = secrets.token_urlsafe(24)
    settings = settings.replace(api_keys_env=f"demo:{key}")
    _say(f"data dir {settings.data_dir}")
    model, settings, note = ensure_demo_model(settings)
    if note:
        _say(note)
    out_dir = Path(args.out) if args.out else settings.data_dir / "demo" / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    service = LocalService(settings, workers=1)
    t_start = time.perf_counter()
    try:
        service.start_backend()
        _say(f"Redis at {redact_url(service.settings.redis_url)}; starting a worker (loads torch, a few seconds)...")
        if not service.wait_ready(args.timeout):
            _say(f"no worker came up; see {service.logs_dir}")
            return 1
        port = args.port or free_port(args.host)
        service.start_api_thread(args.host, port)
        base = f"http://{args.host}:{port}"
        _say(f"API on {base} (docs at {base}/docs)")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
            return _drive(client, args, model, targets, anchors, prompts, out_dir, t_start)
    finally:
        _say("shutting down the API, the worker and Redis")
        service.stop()


def _drive(client: Any, args: argparse.Namespace, model: str, targets: list[str], anchors: list[str],
           prompts: list[str], out_dir: Path, t_start: float) -> int:
    edits = [{"target": t, "anchor": a} for t, a in zip(targets, anchors, strict=True)]
    r = client.post("/v1/erasures", json={"base_model": model, "edits": edits},
                    headers={"Idempotency-Key": f"demo-{out_dir.name}"})
    if r.status_code != 202:
        _say(f"submission refused: {r.status_code} {r.text}")
        return 1
    job_id = r.json()["id"]
    _say(f"submitted erasure {job_id}: " + ", ".join(f"{e['target']!r} -> {e['anchor']!r}" for e in edits))
    deadline = time.monotonic() + args.timeout
    tty, shown = sys.stdout.isatty(), ""
    while True:
        view = client.get(f"/v1/erasures/{job_id}").json()
        line = _progress_line(view)
        if line != shown:
            sys.stdout.write(("\r" + line) if tty else (line + "\n"))
            sys.stdout.flush()
            shown = line
        if view["status"] in ("succeeded", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            if tty:
                print()
            _say(f"gave up waiting after {args.timeout:.0f}s")
            return 1
        time.sleep(0.25)
    if tty:
        print()
    if view["status"] != "succeeded":
        _say(f"erasure {view['status']}: {view.get('error')}")
        return 1
    r = client.get(f"/v1/erasures/{job_id}/checkpoint", params={"format": "delta"})
    digest = hashlib.sha256(r.content).hexdigest()
    if r.status_code != 200 or r.headers.get("etag", "").strip('"') != digest:
        _say("checkpoint download failed or its sha256 does not match the ETag")
        return 1
    delta_path = out_dir / f"erasepro-{job_id}.delta.safetensors"
    delta_path.write_bytes(r.content)
    rows = []
    gen = {"seed": args.seed, "steps": args.steps, "guidance": args.guidance}
    for prompt in prompts:
        before = _image(client, f"/v1/base-models/{model}/generate", {"prompt": prompt, **gen}, args.timeout)
        after = _image(client, f"/v1/erasures/{job_id}/generate", {"prompt": prompt, **gen}, args.timeout)
        if before.status_code != 200 or after.status_code != 200:
            _say(f"generation failed for {prompt!r}: {before.status_code} / {after.status_code}")
            return 1
        rows.append((prompt, before.content, after.content))
        _say(f"generated before/after for {prompt!r}")
    grid = side_by_side(rows, out_dir / "before_after.png")
    summary = (view.get("report") or {}).get("summary") or {}
    timings = view.get("timings") or {}
    print()
    print(f"  erasure        {job_id} on {model!r}")
    if summary:
        print(f"  K/V residual   {summary.get('kv_residual', 0):.2e}   preserve drift "
              f"{summary.get('kv_preserve_drift') or 0:.4f}   update norm {summary.get('kv_update_norm', 0):.4f}")
    if timings:
        print("  timings        " + "  ".join(f"{k}={v}" for k, v in timings.items()))
    print(f"  checkpoint     {delta_path} ({len(r.content):,} bytes, sha256 {digest[:16]}...)")
    print(f"  before/after   {grid}")
    print(f"  job record     {client.base_url}/v1/erasures/{job_id} (while the service runs)")
    print(f"  total          {time.perf_counter() - t_start:.1f}s")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``demo``."""
    p = subparsers.add_parser("demo", help="run the whole service once: erase, download, generate before/after",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", help=f"concept to erase (default {DEFAULT_TARGETS})")
    p.add_argument("--anchor", action="append", help=f"what it becomes (default {DEFAULT_ANCHORS})")
    p.add_argument("--prompt", action="append", help="prompt for the before/after images (repeatable)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    p.add_argument("--out", help="output folder (default <data dir>/demo/<time>)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the worker and the job")
    p.set_defaults(func=run_demo)
