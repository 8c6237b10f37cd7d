"""Artifact storage behind one interface (:class:`Storage`): the file system by default, or an S3-compatible
object store, chosen by ``ERASEPRO_STORAGE_URL`` (see :func:`open_storage` and docs/service.md, "Storage").

Torch-free; boto3 is imported only when an ``s3://`` URL is configured.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from erasepro_jobs.storage.base import (
    InvalidKey,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    check_key,
)
from erasepro_jobs.storage.fs import FileStorage


class StorageSettings(Protocol):
    """What :func:`open_storage` reads of :class:`erasepro_jobs.settings.Settings` (named here, not imported: the
    settings check their storage URL with :func:`parse_storage_url`)."""

    storage_url: str | None
    data_dir: Path
    s3_endpoint_url: str | None

__all__ = ["FileStorage", "InvalidKey", "InvalidRange", "ObjectInfo", "ObjectNotFound", "Storage", "StorageError",
           "check_key", "open_storage", "parse_storage_url"]

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_storage_url(url: str) -> tuple[str, str, str]:
    """``file:///abs/path`` -> ``("file", "/abs/path", "")``; ``s3://bucket/prefix`` -> ``("s3", bucket,
    prefix)``; anything else is a :class:`ValueError` that says what is accepted."""
    scheme, sep, rest = url.partition("://")
    if scheme == "file" and sep:
        if not rest.startswith("/") or rest.startswith("//"):
            raise ValueError(f"a file storage URL is file:///absolute/path, got {url!r}")
        return "file", rest, ""
    if scheme == "s3" and sep:
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise ValueError(f"not an S3 bucket name in {url!r} (3-63 of a-z 0-9 . -)")
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_key(prefix)
            except InvalidKey as exc:
                raise ValueError(f"bad key prefix in {url!r}: {exc}") from None
        return "s3", bucket, prefix
    raise ValueError(f"ERASEPRO_STORAGE_URL is file:///path or s3://bucket/prefix, got {url!r}")


def open_storage(settings: StorageSettings) -> Storage:
    """The store this process's settings name: unset -> files under ``$ERASEPRO_DATA_DIR``; ``file:///path``
    -> files under that path; ``s3://bucket/prefix`` -> :class:`~erasepro_jobs.storage.s3.S3Storage`."""
    if not settings.storage_url:
        return FileStorage(settings.data_dir)
    kind, where, prefix = parse_storage_url(settings.storage_url)
    if kind == "file":
        return FileStorage(Path(where))
    from erasepro_jobs.storage.s3 import S3Storage

    return S3Storage(where, prefix, settings.data_dir / "staging", endpoint_url=settings.s3_endpoint_url)
