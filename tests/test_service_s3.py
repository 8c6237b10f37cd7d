"""The service with its artifacts in S3 (``ERASEPRO_STORAGE_URL=s3://…``), end to end and nothing faked: a real
S3-compatible server (SeaweedFS, tests/s3_server.py), a private Redis, the API under uvicorn and two
``python -m worker`` processes with *different* data dirs: worker A takes erasures and exports, worker B only
generations, so B can only generate from an erasure through the delta A put into the object store."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import redis

pytest.register_assert_rewrite("service_fixtures")
from s3_server import S3Server  # noqa: E402
from service_fixtures import GEN, KEYS, ROOT, SHORT_SPEC, Stack, submit, wait_for, wait_status  # noqa: E402

from app.embedded import EmbeddedRedis, free_port, spawn  # noqa: E402

PREFIX = "prod/erasepro"


class S3Stack(Stack):
    """Like the shared stack, but artifacts in S3 and two workers on separate machines' worth of disk."""

    def __init__(self) -> None:
        super().__init__()
        self.s3: S3Server | None = None
        self.workers: dict[str, subprocess.Popen] = {}

    def build_models(self) -> None:
        from erasepro_core.pipeline import save_pipeline
        from erasepro_core.tiny import tiny_sd_pipeline

        save_pipeline(tiny_sd_pipeline(seed=0), self.models_dir / "tiny")
        (self.tmp / "models.toml").write_text(f'[models.tiny]\npath = "{self.models_dir / "tiny"}"\nfamily = "sd1"\n',
                                              encoding="utf-8")

    def start(self) -> S3Stack:
        self.build_models()
        self.s3 = S3Server(self.tmp / "s3").start()
        self.redis_server = EmbeddedRedis(self.tmp / "redis", persist=False).start()
        self.env = {
            **os.environ, **self.s3.env(),
            "ERASEPRO_STORAGE_URL": f"s3://{self.s3.bucket}/{PREFIX}",
            "REDIS_URL": self.redis_server.url,
            "ERASEPRO_DATA_DIR": str(self.tmp / "api-data"),
            "ERASEPRO_BASE_MODELS": str(self.tmp / "models.toml"),
            "ERASEPRO_API_KEYS": ",".join(f"{t}:{k}" for t, k in KEYS.items()),
            "ERASEPRO_LEASE_TTL_S": "5", "ERASEPRO_GENERATE_WAIT_S": "120", "ERASEPRO_BUNDLED": "0",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.r = redis.Redis.from_url(self.redis_server.url, decode_responses=True)
        for name, queues in (("a", "erase,webhooks"), ("b", "generate")):
            env = {**self.env, "ERASEPRO_DATA_DIR": str(self.tmp / f"worker-{name}")}
            self.workers[name] = spawn([sys.executable, "-m", "worker", "--queues", queues], env=env,
                                       log_path=self.logs / f"worker-{name}.log", cwd=str(ROOT))
        for name, proc in self.workers.items():
            wait_for(lambda p=proc: p.poll() is not None or self.r.zscore(
                "erasepro:workers", f"erasepro-{os.uname().nodename}-{p.pid}") is not None, f"worker {name}")
            assert proc.poll() is None, self.log_tail(f"worker-{name}")
        self.port = free_port()
        self.api = self._uvicorn(self.env, self.port, "api")
        wait_for(lambda: self._get("/readyz") == 200, "the API to be ready")
        return self

    def extra_processes(self) -> list[subprocess.Popen]:
        return list(self.workers.values())

    def stop(self) -> None:
        super().stop()  # the API and every worker at once, then Redis
        if self.s3 is not None:
            self.s3.stop()


@pytest.fixture(scope="module")
def s3stack():
    stack = S3Stack()
    try:
        yield stack.start()
    finally:
        stack.stop()


def test_checkpoints_live_in_s3_and_any_worker_uses_them(s3stack: S3Stack) -> None:
    s3 = s3stack.s3
    with s3stack.client() as acme:
        job_id = submit(acme, SHORT_SPEC)
        view = wait_status(acme, job_id)
        assert view["status"] == "succeeded", (view, s3stack.log_tail("worker-a"))
        ckpt = f"{PREFIX}/tenants/acme/erasures/{job_id}"
        assert sorted(s3.keys(ckpt + "/")) == [f"{ckpt}/delta.safetensors", f"{ckpt}/manifest.json"]
        for data_dir in ("api-data", "worker-a", "worker-b"):  # nothing of it on any local disk
            assert not list((s3stack.tmp / data_dir).glob("tenants/*/erasures/*")), data_dir

        # the whole delta, then ranges, streamed from S3 by the API
        full = acme.get(f"/v1/erasures/{job_id}/checkpoint")
        assert full.status_code == 200, full.text
        sha = hashlib.sha256(full.content).hexdigest()
        size = len(full.content)
        assert full.headers["etag"] == f'"{sha}"' == f'"{view["artifacts"]["delta.safetensors"]["sha256"]}"'
        assert full.headers["x-content-sha256"] == sha and int(full.headers["content-length"]) == size
        assert full.headers["accept-ranges"] == "bytes"
        assert "attachment" in full.headers["content-disposition"]
        part = acme.get(f"/v1/erasures/{job_id}/checkpoint", headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == full.content[:100]
        assert part.headers["content-range"] == f"bytes 0-99/{size}"
        tail = acme.get(f"/v1/erasures/{job_id}/checkpoint", headers={"Range": "bytes=-50"})
        assert tail.status_code == 206 and tail.content == full.content[-50:]
        assert tail.headers["content-range"] == f"bytes {size - 50}-{size - 1}/{size}"
        rest = acme.get(f"/v1/erasures/{job_id}/checkpoint", headers={"Range": f"bytes={size - 10}-"})
        assert rest.status_code == 206 and rest.content == full.content[-10:]
        multi = acme.get(f"/v1/erasures/{job_id}/checkpoint", headers={"Range": "bytes=0-9,20-29"})
        assert multi.status_code == 206 and multi.headers["content-type"].startswith("multipart/byteranges")
        assert int(multi.headers["content-length"]) == len(multi.content)
        assert full.content[:10] in multi.content and full.content[20:30] in multi.content
        assert f"bytes 20-29/{size}".encode() in multi.content
        assert acme.get(f"/v1/erasures/{job_id}/checkpoint", headers={"If-None-Match": f'"{sha}"'}).status_code == 304
        assert acme.get(f"/v1/erasures/{job_id}/checkpoint", headers={"Range": f"bytes={size}-"}).status_code == 416
        head = acme.head(f"/v1/erasures/{job_id}/checkpoint")
        assert head.status_code == 200 and int(head.headers["content-length"]) == size and head.content == b""

        # worker B (generate queue only, its own data dir) generates with the delta worker A wrote
        before = acme.post("/v1/base-models/tiny/generate", json={"prompt": "a cat", "seed": 0, **GEN})
        after = acme.post(f"/v1/erasures/{job_id}/generate", json={"prompt": "a cat", "seed": 0, **GEN})
        assert before.status_code == after.status_code == 200, (after.text, s3stack.log_tail("worker-b"))
        assert after.content[:8] == b"\x89PNG\r\n\x1a\n" and after.content != before.content
        cached = s3stack.tmp / "worker-b" / "cache" / "deltas" / f"{sha}.safetensors"
        assert cached.read_bytes() == full.content  # downloaded from S3 and verified

        # the diffusers export: worker A builds the tar, puts it, updates the manifest under the Redis lock
        def exported():
            r = acme.get(f"/v1/erasures/{job_id}/checkpoint", params={"format": "diffusers"}, follow_redirects=True)
            return r if r.status_code == 200 else None

        tar = wait_for(exported, "the diffusers export", every=0.5)
        assert hashlib.sha256(tar.content).hexdigest() == tar.headers["x-content-sha256"]
        assert f"{ckpt}/pipeline.tar" in s3.keys(ckpt + "/")
        assert acme.get(f"/v1/erasures/{job_id}").json()["artifacts"]["pipeline.tar"]["size"] == len(tar.content)

        # delete: every object goes
        assert acme.delete(f"/v1/erasures/{job_id}").status_code == 204
        assert s3.keys(ckpt + "/") == []
        assert acme.get(f"/v1/erasures/{job_id}/checkpoint").status_code == 404


def test_an_unreachable_store_is_a_503_not_a_500(s3stack: S3Stack) -> None:
    with s3stack.client() as acme:
        job_id = submit(acme, SHORT_SPEC)
        assert wait_status(acme, job_id)["status"] == "succeeded"
        s3stack.s3.stop()
        try:
            for path in (f"/v1/erasures/{job_id}", f"/v1/erasures/{job_id}/checkpoint"):
                r = acme.get(path)
                assert r.status_code == 503 and r.json()["detail"] == "the artifact storage is unavailable", r.text
            assert acme.get("/v1/erasures").status_code == 503
        finally:
            s3stack.s3.start()
        # same ports, same data dir: the store comes back with the checkpoint, the API recovers by itself
        back = wait_for(lambda: (lambda r: r if r.status_code != 503 else None)(
            acme.get(f"/v1/erasures/{job_id}/checkpoint")), "the API to reach the store again", deadline_s=60)
        assert back.status_code == 200


def test_a_redis_flush_loses_no_checkpoint_in_s3(s3stack: S3Stack) -> None:
    with s3stack.client() as acme:
        job_id = submit(acme, {**SHORT_SPEC, "metadata": {"where": "s3"}})
        view = wait_status(acme, job_id)
        assert view["status"] == "succeeded"
        sha = view["artifacts"]["delta.safetensors"]["sha256"]
        s3stack.r.flushall()
        listed = {j["id"]: j for j in acme.get("/v1/erasures", params={"limit": 100}).json()["items"]}
        assert listed[job_id]["status"] == "succeeded" and listed[job_id]["metadata"] == {"where": "s3"}
        assert acme.get(f"/v1/erasures/{job_id}").json()["report"] == view["report"]
        r = acme.get(f"/v1/erasures/{job_id}/checkpoint")
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha
