"""Artifacts as files under one root directory (the default: ``$ERASEPRO_DATA_DIR``).

A put writes a hidden temporary name in the destination's folder, fsyncs it, renames it over the key and
fsyncs the folder (:mod:`erasepro_core.io`), so readers see the old file or the whole new one. ``put_file``
with ``move=True`` renames a file that was built in :meth:`FileStorage.scratch` (same folder tree, same file
system) instead of copying it: a multi-gigabyte tar is never written twice. Deleting a prefix renames its
folder aside (``.trash-…``) before removing it, so a half-deleted checkpoint is never visible under its name.

Works on any POSIX file system several machines mount (NFS, a CSI volume) as long as rename is atomic there.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from erasepro_core.io import atomic_write, fsync_dir, write_bytes_atomic
from erasepro_jobs.storage.base import (
    CHUNK,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    check_key,
    check_prefix,
    resolve_range,
    sha256_file,
)


class FileStorage(Storage):
    """Keys are paths relative to ``root``; hidden names (``.``-prefixed) are temporaries and never listed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = f"file://{self.root}"
        # sha256 of files by (inode, mtime, size): computing one of a large tar is slow, and they never change
        self._sums: dict[tuple[int, int, int, str], str] = {}
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _info(self, key: str, path: Path, st: os.stat_result, sha256: str | None) -> ObjectInfo:
        return ObjectInfo(key=key, size=st.st_size, version=f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}",
                          sha256=sha256)

    # --------------------------------------------------------------------------------------- writes
    def put_file(self, key: str, path: Path, *, move: bool = False, sha256: str | None = None) -> ObjectInfo:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        sha = sha256 or sha256_file(path)
        if move:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            try:
                os.replace(path, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # another file system: copy instead
                    raise
                move = False
            else:
                fsync_dir(dest.parent)
        if not move:
            atomic_write(dest, lambda tmp: shutil.copyfile(path, tmp))
        return self._remember(key, dest, sha)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        dest = self._path(key)
        write_bytes_atomic(dest, data)
        return self._remember(key, dest, hashlib.sha256(data).hexdigest())

    def _remember(self, key: str, dest: Path, sha: str) -> ObjectInfo:
        st = dest.stat()
        with self._lock:
            self._sums[(st.st_ino, st.st_mtime_ns, st.st_size, str(dest))] = sha
        return self._info(key, dest, st, sha)

    # ---------------------------------------------------------------------------------------- reads
    def _stat(self, key: str) -> tuple[Path, os.stat_result]:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not path.is_file():
            raise ObjectNotFound(key)
        return path, st

    def stat(self, key: str, *, checksum: bool = True) -> ObjectInfo:
        path, st = self._stat(key)
        sha = None
        if checksum:
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size, str(path))
            with self._lock:
                sha = self._sums.get(stamp)
            if sha is None:
                sha = sha256_file(path)
                with self._lock:
                    if len(self._sums) > 10000:
                        self._sums.clear()
                    self._sums[stamp] = sha
        return self._info(key, path, st, sha)

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path, st = self._stat(key)
        a, b = resolve_range(start, end, st.st_size)
        try:
            f = open(path, "rb")  # opened now: a delete after this call does not cut the stream short
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        return _stream(f, a, b)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        prefix = check_prefix(prefix)
        top = self.root / prefix if prefix else self.root
        out: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, self.root)
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if rel == "." else f"{Path(rel).as_posix()}/{name}"
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                out.append(ObjectInfo(key=key, size=st.st_size, version=f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"))
        return sorted(out, key=lambda o: o.key)

    # --------------------------------------------------------------------------------------- delete
    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        fsync_dir(path.parent)
        return True

    def delete_prefix(self, prefix: str) -> int:
        prefix = check_prefix(prefix)
        if not prefix:
            raise ValueError("refusing to delete the whole store")
        top = self.root / prefix
        if not top.is_dir():
            return 0
        trash = top.with_name(f".trash-{top.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(top, trash)  # never half-visible under its real name
        except OSError:
            trash = top
        count = sum(len([n for n in files if not n.startswith(".")]) for _, _, files in os.walk(trash))
        shutil.rmtree(trash, ignore_errors=True)
        fsync_dir(top.parent)
        return count

    # ---------------------------------------------------------------------------------------- local
    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    @contextmanager
    def scratch(self, near: str, tag: str) -> Iterator[Path]:
        # beside the folder the keys will land in: same file system, so put_file(move=True) is a rename, and a
        # full disk fails here, before anything is visible
        parent = (self.root / check_key(near)).parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{tag}-", dir=parent))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _stream(f, a: int, b: int) -> Iterator[bytes]:
    try:
        f.seek(a)
        left = b - a
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        f.close()

