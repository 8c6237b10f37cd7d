"""Artifacts in an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Ceph RGW, R2 …), through boto3.

Selected by ``ERASEPRO_STORAGE_URL=s3://bucket/prefix``; every key lives at ``prefix/key`` in ``bucket``.
The endpoint comes from ``ERASEPRO_S3_ENDPOINT_URL`` (else boto3's own ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL``, else AWS), credentials and region from the standard AWS chain (environment, shared config
files, instance roles). A custom endpoint is addressed path-style (``http://host/bucket/key``), which every
S3-compatible server understands.

Atomicity is the protocol's: an object appears when its single ``PUT`` or its multipart upload completes, never
partially. The sha256 of the bytes is computed before the upload and kept as the object's user metadata
(``x-amz-meta-sha256``), so :meth:`S3Storage.stat` answers it with one ``HEAD``; boto3 additionally sends a
CRC checksum the server verifies. Reads are ranged ``GET``\\ s streamed in 1 MiB chunks.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from erasepro_jobs.storage.base import (
    CHUNK,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    check_key,
    check_prefix,
    sha256_file,
    temp_dir,
)

MULTIPART_THRESHOLD = 64 << 20  # larger files go up as multipart uploads (parts of this size, 4 in flight)


class S3Storage(Storage):
    """One bucket and key prefix; ``scratch_root`` is a local folder for files built before upload."""

    def __init__(self, bucket: str, prefix: str, scratch_root: Path, *, endpoint_url: str | None = None,
                 client: Any = None, multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.scratch_root = Path(scratch_root)
        self.description = f"s3://{bucket}/{self.prefix}" + (f" at {endpoint_url}" if endpoint_url else "")
        if client is None:
            session = boto3.session.Session()
            config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 4, "mode": "standard"},
                            s3={"addressing_style": "path"} if endpoint_url else {})
            client = session.client("s3", endpoint_url=endpoint_url, config=config,
                                    region_name=session.region_name or "us-east-1")
        self.client = client
        self._transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                        multipart_chunksize=multipart_threshold, max_concurrency=4)

    def _k(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _unprefix(self, name: str) -> str:
        return name[len(self.prefix) + 1:] if self.prefix else name

    def _call(self, what: str, key: str, fn: Any, **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kw)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise ObjectNotFound(key) from None
            if code in ("416", "InvalidRange"):
                raise InvalidRange(f"{key}: {err.get('Message') or code}") from None
            raise StorageError(f"{what} {key} on {self.description}: {code} {err.get('Message', '')}".strip()) from exc
        except BotoCoreError as exc:  # unreachable endpoint, timeouts, missing credentials
            raise StorageError(f"{what} {key} on {self.description}: {exc}") from exc

    # --------------------------------------------------------------------------------------- writes
    def put_file(self, key: str, path: Path, *, move: bool = False, sha256: str | None = None) -> ObjectInfo:
        from botocore.exceptions import BotoCoreError, ClientError

        name = self._k(key)
        sha = sha256 or sha256_file(path)
        try:
            self.client.upload_file(str(path), self.bucket, name, Config=self._transfer,
                                    ExtraArgs={"Metadata": {"sha256": sha}})
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"upload {key} to {self.description}: {exc}") from exc
        if move:
            Path(path).unlink(missing_ok=True)
        return self.stat(key)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        name = self._k(key)
        sha = hashlib.sha256(data).hexdigest()
        out = self._call("put", key, self.client.put_object, Key=name, Body=io.BytesIO(data), Metadata={"sha256": sha})
        return ObjectInfo(key=key, size=len(data), version=str(out.get("ETag", "")), sha256=sha)

    # ---------------------------------------------------------------------------------------- reads
    def stat(self, key: str, *, checksum: bool = True) -> ObjectInfo:
        head = self._call("head", key, self.client.head_object, Key=self._k(key))
        sha = (head.get("Metadata") or {}).get("sha256")
        if checksum and not sha:  # written by something else: hash it once, streamed
            h = hashlib.sha256()
            for chunk in self.read(key):
                h.update(chunk)
            sha = h.hexdigest()
        return ObjectInfo(key=key, size=int(head["ContentLength"]), version=str(head.get("ETag", "")), sha256=sha)

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        name = self._k(key)
        if start < 0:
            rng = f"bytes={start}"  # suffix: the last -start bytes
        elif end is None:
            rng = f"bytes={start}-" if start else None
        elif end <= start:
            self.stat(key, checksum=False)  # still a missing key is an error
            return iter(())
        else:
            rng = f"bytes={start}-{end - 1}"
        kw = {"Key": name, **({"Range": rng} if rng else {})}
        try:
            out = self._call("get", key, self.client.get_object, **kw)
        except InvalidRange:
            if start < 0:  # a suffix of an empty object: nothing to send
                return iter(())
            raise
        return _stream(out["Body"], key, self.description)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        prefix = check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        out: list[ObjectInfo] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in pages:
                for o in page.get("Contents", []):
                    modified = o.get("LastModified")
                    out.append(ObjectInfo(key=self._unprefix(o["Key"]), size=int(o["Size"]),
                                          version=str(o.get("ETag", "")),
                                          modified=modified.timestamp() if modified is not None else None))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"list {prefix or '/'} on {self.description}: {exc}") from exc
        return sorted(out, key=lambda o: o.key)

    # --------------------------------------------------------------------------------------- delete
    def delete(self, key: str) -> bool:
        try:
            self.stat(key, checksum=False)
        except ObjectNotFound:
            return False
        self._call("delete", key, self.client.delete_object, Key=self._k(key))
        return True

    def delete_prefix(self, prefix: str) -> int:
        if not check_prefix(prefix):
            raise ValueError("refusing to delete the whole store")
        keys = [o.key for o in self.list(prefix)]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": self._k(k)} for k in keys[i:i + 1000]]
            out = self._call("delete", prefix, self.client.delete_objects, Delete={"Objects": batch, "Quiet": True})
            if out.get("Errors"):
                raise StorageError(f"delete under {prefix} on {self.description}: {out['Errors'][:3]}")
        return len(keys)

    # ---------------------------------------------------------------------------------------- local
    def scratch_roots(self) -> list[Path]:
        return [self.scratch_root]

    @contextmanager
    def scratch(self, near: str, tag: str) -> Iterator[Path]:
        check_key(near)
        with temp_dir(self.scratch_root, tag) as tmp:
            yield tmp


def _stream(body: Any, key: str, where: str) -> Iterator[bytes]:
    from botocore.exceptions import BotoCoreError

    try:
        while chunk := body.read(CHUNK):
            yield chunk
    except BotoCoreError as exc:
        raise StorageError(f"reading {key} from {where}: {exc}") from exc
    finally:
        body.close()
