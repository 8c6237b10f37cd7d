"""Atomic file writes and forgiving JSON reads, torch-free: a reader sees the old file or the complete new one.

Every writer goes to a unique temporary name in the destination's folder, is flushed and fsynced, then
renamed over the destination (``os.replace`` is atomic within one file system).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """Where derived files live: ``$ERASEPRO_CACHE_DIR``, else ``$XDG_CACHE_HOME/erasepro`` or ``~/.cache/erasepro``."""
    if os.environ.get("ERASEPRO_CACHE_DIR"):
        return Path(os.environ["ERASEPRO_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "erasepro"


def temporary_sibling(path: Path) -> Path:
    """A unique hidden name beside ``path`` (same folder, so the final rename stays on one file system)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, durable: bool = True) -> Path:
    """Call ``write(tmp)`` to produce the file at a temporary name, fsync it, then rename it to ``path``
    (and fsync the folder when ``durable``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, mode: int | None = None) -> Path:
    """``mode`` (e.g. ``0o600`` for secrets) is set when the temporary file is created, never after."""

    def write(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    return atomic_write(path, write)


def write_text_atomic(path: str | os.PathLike, text: str, *, mode: int | None = None) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def write_json_atomic(path: str | os.PathLike, data: Any, *, mode: int | None = None, indent: int | None = 1) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=True), mode=mode)


def publish_dir(final: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """Build a folder under a temporary name and rename it to ``final``; if another process published it
    first, keep theirs (both were built from the same inputs)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        build(tmp)
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def json_or_none(text: str | None) -> Any:
    """``text`` parsed as JSON; ``None`` when it is empty or not JSON (a record field written by another version)."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def read_json_object(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object in the file at ``path``; ``None`` when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """:func:`read_json_object`, ``{}`` where it gives ``None`` (a model folder's optional config files)."""
    return read_json_object(path) or {}
