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
import stat
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from erasepro_core.io import fsync_dir, temporary_sibling
from erasepro_jobs.storage.base import (
    CHUNK,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    check_key,
    check_prefix,
    resolve_range,
    sha256_file,
    temp_dir,
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
            try:
                return self._commit(key, Path(path), dest, sha)
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # another file system: copy instead
                    raise
        tmp = temporary_sibling(dest)
        try:
            shutil.copyfile(path, tmp)
            return self._commit(key, tmp, dest, sha)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_sibling(dest)
        try:
            with open(tmp, "xb") as f:
                f.write(data)
            return self._commit(key, tmp, dest, hashlib.sha256(data).hexdigest())
        finally:
            tmp.unlink(missing_ok=True)

    def _commit(self, key: str, tmp: Path, dest: Path, sha: str) -> ObjectInfo:
        """fsync ``tmp``, note its sha256 by its own inode (a rename keeps it; another put racing on the same key
        has another), rename it over ``dest``, fsync the folder."""
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
            st = os.fstat(f.fileno())
        with self._lock:
            if len(self._sums) > 10000:
                self._sums.clear()
            self._sums[(st.st_ino, st.st_mtime_ns, st.st_size, str(dest))] = sha
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        return self._info(key, dest, st, sha)

    # ---------------------------------------------------------------------------------------- reads
    def _stat(self, key: str) -> tuple[Path, os.stat_result]:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        return path, st

    def _open(self, key: str) -> tuple[BinaryIO, os.stat_result]:
        """The file opened, and the stat *of that open file*: a put may rename a new file over the path at any
        moment, so the size must come from the same inode the bytes are read from."""
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - handed to the caller
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(key) from None
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            f.close()
            raise ObjectNotFound(key)
        return f, st

    def stat(self, key: str, *, checksum: bool = True) -> ObjectInfo:
        if not checksum:
            path, st = self._stat(key)
            return self._info(key, path, st, None)
        f, st = self._open(key)
        with f:
            path = self._path(key)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size, str(path))
            with self._lock:
                sha = self._sums.get(stamp)
            if sha is None:
                h = hashlib.sha256()
                while block := f.read(CHUNK):
                    h.update(block)
                sha = h.hexdigest()
                with self._lock:
                    if len(self._sums) > 10000:
                        self._sums.clear()
                    self._sums[stamp] = sha
        return self._info(key, path, st, sha)

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        f, st = self._open(key)  # opened now: a later put or delete does not change what this stream returns
        try:
            a, b = resolve_range(start, end, st.st_size)
        except BaseException:
            f.close()
            raise
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
                out.append(ObjectInfo(key=key, size=st.st_size, version=f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}",
                                      modified=st.st_mtime))
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

    def scratch_roots(self) -> list[Path]:
        return list((self.root / "tenants").glob("*/erasures"))  # scratch lies beside the checkpoints

    @contextmanager
    def scratch(self, near: str, tag: str) -> Iterator[Path]:
        # beside the folder the keys will land in: same file system, so put_file(move=True) is a rename, and a
        # full disk fails here, before anything is visible
        with temp_dir((self.root / check_key(near)).parent, tag) as tmp:
            yield tmp


def _stream(f: BinaryIO, a: int, b: int) -> Iterator[bytes]:
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

