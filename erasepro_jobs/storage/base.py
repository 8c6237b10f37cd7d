"""The artifact store's interface: what the worker, the API and shutdown may do with checkpoint files.

An artifact is an immutable-once-written object under a *key*, a relative POSIX path such as
``tenants/acme/erasures/{id}/delta.safetensors``. Every implementation guarantees:

* **atomic puts**: a reader sees the previous object or the complete new one, never a partial one;
* **stat with sha256**: the size, a version token (changes whenever the object does) and the sha256 of the
  bytes (recorded at put time; computed on demand where the backend cannot keep it);
* **ranged streaming reads** in bounded memory (a diffusers tar can be gigabytes);
* **list** under a prefix and **delete** of a key or a whole prefix.

Keys are checked before any backend sees them (:func:`check_key`): no absolute paths, no ``..``, no empty or
hidden (``.``-prefixed) parts — hidden names are the file-system implementation's temporaries.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from erasepro_core.io import atomic_write

CHUNK = 1 << 20  # streaming reads and hashing go 1 MiB at a time
_PART_RE = re.compile(r"^[A-Za-z0-9_@+=,~-][A-Za-z0-9_.@+=,~-]*$")


class StorageError(Exception):
    """The store could not do what was asked (unreachable, refused, misconfigured)."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """No object under that key."""


class InvalidRange(StorageError, ValueError):
    """A read range that the object cannot satisfy (starts at or past its end)."""


class InvalidKey(ValueError):
    """A key that is not a plain relative path (absolute, ``..``, empty or hidden parts, odd characters)."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: ``sha256`` may be ``None`` in listings (a backend may keep it out of its index)."""

    key: str
    size: int
    version: str  # changes whenever the object does (fs: inode/mtime/size; S3: the ETag)
    sha256: str | None = None
    modified: float | None = None  # when it was written (epoch seconds), in listings: retention's age


def check_key(key: str) -> str:
    """``key`` if it is a plain relative path of allowed parts, else :class:`InvalidKey` (no path traversal)."""
    if not isinstance(key, str) or not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKey(f"not a relative key: {key!r}")
    for part in key.split("/"):
        if not _PART_RE.match(part):
            raise InvalidKey(f"bad part {part!r} in key {key!r} (no empty, '.', '..' or hidden parts)")
    return key


def check_prefix(prefix: str) -> str:
    """A listing/deletion prefix: ``""`` (everything) or a key; returned with one trailing ``/``."""
    prefix = prefix.rstrip("/")
    return "" if prefix == "" else check_key(prefix) + "/"


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class Storage(ABC):
    """Where checkpoints live. Implementations: :class:`~erasepro_jobs.storage.fs.FileStorage`,
    :class:`~erasepro_jobs.storage.s3.S3Storage`; pick one with :func:`erasepro_jobs.storage.open_storage`."""

    #: how the store is named in logs and errors (never with credentials)
    description: str = "storage"

    # --------------------------------------------------------------------------------------- writes
    @abstractmethod
    def put_file(self, key: str, path: Path, *, move: bool = False, sha256: str | None = None) -> ObjectInfo:
        """Store the local file ``path`` under ``key`` atomically; with ``move`` the file may be consumed
        (renamed into place on the file system instead of copied); ``sha256``: the file's, when the caller
        already computed it (a large tar is not hashed twice)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under ``key`` atomically."""

    # ---------------------------------------------------------------------------------------- reads
    @abstractmethod
    def stat(self, key: str, *, checksum: bool = True) -> ObjectInfo:
        """Size, version and (with ``checksum``) sha256 of ``key``; :class:`ObjectNotFound` if absent."""

    @abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes ``[start, end)`` of ``key`` in chunks of at most 1 MiB. ``end=None``: to the end;
        a negative ``start``: the last ``-start`` bytes (an HTTP suffix range). :class:`ObjectNotFound` if
        absent, :class:`InvalidRange` if ``start`` is at or past the end of a non-empty object. The object is
        looked up when this is called, not at the first ``next``."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix/`` (``""``: all), sorted by key."""

    # --------------------------------------------------------------------------------------- delete
    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; False if there was nothing."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix/``; returns how many."""

    # ---------------------------------------------------------------------------------------- local
    def local_path(self, key: str) -> Path | None:
        """The object as a local file, where the backend is the local file system (zero-copy serving);
        ``None`` elsewhere."""
        return None

    @abstractmethod
    def scratch(self, near: str, tag: str) -> AbstractContextManager[Path]:
        """A private local directory, removed on exit, to build files in before putting them under keys that
        start with ``near/`` (on the file system it lies beside them, so ``put_file(move=True)`` is a rename).
        Its name starts with ``.tmp-{tag}-`` so a worker can tell whose leftovers it finds after a crash."""

    def scratch_roots(self) -> list[Path]:
        """The local folders :meth:`scratch` directories are made in (where a crashed worker's are found)."""
        return []

    # -------------------------------------------------------------------------------------- helpers
    def get_bytes(self, key: str, limit: int = 64 << 20) -> bytes:
        """The whole (small) object; a :class:`StorageError` past ``limit`` bytes (manifests, not tars)."""
        out = bytearray()
        for chunk in self.read(key):
            out += chunk
            if len(out) > limit:
                raise StorageError(f"{key} is larger than {limit} bytes")
        return bytes(out)

    def download(self, key: str, dest: Path) -> str:
        """Copy ``key`` to the local file ``dest`` atomically (streamed); returns the sha256 of what arrived."""
        h = hashlib.sha256()

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                for chunk in self.read(key):
                    h.update(chunk)
                    f.write(chunk)

        atomic_write(dest, write)
        return h.hexdigest()

    def exists(self, key: str) -> bool:
        try:
            self.stat(key, checksum=False)
        except ObjectNotFound:
            return False
        return True


@contextmanager
def temp_dir(parent: Path, tag: str) -> Iterator[Path]:
    """A fresh private folder ``parent/.tmp-<tag>-*``, removed with everything in it on exit."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{tag}-", dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_range(start: int, end: int | None, size: int) -> tuple[int, int]:
    """``(start, end)`` as :meth:`Storage.read` takes them -> absolute ``[a, b)`` within an object of ``size``."""
    if start < 0:
        return max(0, size + start), size
    if start >= size and size > 0:
        raise InvalidRange(f"range starts at {start}, past the end of a {size}-byte object")
    stop = size if end is None else min(end, size)
    return start, max(start, stop)


