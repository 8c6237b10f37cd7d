"""Preserve statistics on disk, so the first job in a fresh worker process is as fast as the hundredth.

One folder per key — sha256 of (fingerprint of the text towers' weights, their device type and dtype, the
preserve set's hash, the token mode, :data:`STATS_FORMAT`) — holding one safetensors file per site
(``ctx``, ``fc2.<tower>.<layer>``): Σ c cᵀ (float64), the drift sample and the column count. Any key part
changing gives another folder, so stale statistics are never read. Files are written atomically; concurrent
workers serialise on the folder's lock file (one computes, the others wait, then load). Safetensors only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from erasepro_core.delta import save_tensors
from erasepro_core.io import cache_dir
from erasepro_core.stats import SiteStats

log = logging.getLogger(__name__)
STATS_FORMAT = "1"  # bump when what is stored, or how it is computed, changes
MAX_ENTRIES = 16  # key folders kept; the least recently used beyond this are removed
Site = tuple  # ("ctx",) or ("fc2", tower, layer)


def site_name(site: Site) -> str:
    return ".".join(str(p) for p in site)


class StatsStore:
    """A folder of persisted preserve statistics (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, max_entries: int = MAX_ENTRIES) -> None:
        self.root = Path(root)
        self.max_entries = max_entries

    @classmethod
    def default(cls) -> StatsStore | None:
        """``$ERASEPRO_STATS_DIR`` (``off`` disables), else ``<cache dir>/preserve-stats``."""
        where = os.environ.get("ERASEPRO_STATS_DIR", "")
        if where.lower() in ("off", "none", "0"):
            return None
        return cls(where or cache_dir() / "preserve-stats")

    @staticmethod
    def key(parts: dict[str, str]) -> str:
        return hashlib.sha256(json.dumps({**parts, "format": STATS_FORMAT}, sort_keys=True).encode()).hexdigest()[:32]

    def folder(self, key: str) -> Path:
        return self.root / key

    def load(self, key: str, sites: list[Site]) -> dict[Site, SiteStats]:
        """The stored statistics among ``sites`` (unreadable files count as missing and are recomputed)."""
        out: dict[Site, SiteStats] = {}
        for site in sites:
            path = self.folder(key) / f"{site_name(site)}.safetensors"
            if not path.is_file():
                continue
            try:
                with safe_open(str(path), framework="pt") as f:
                    meta = f.metadata() or {}
                    if meta.get("format") != STATS_FORMAT or meta.get("key") != key:
                        continue
                    out[site] = SiteStats(f.get_tensor("gram"), int(meta["n"]), f.get_tensor("sample"))
            except Exception as exc:  # a damaged file is recomputed, never trusted
                log.warning("preserve statistics %s unreadable (%s): recomputing", path, exc)
        if out:
            with contextlib.suppress(OSError):
                os.utime(self.folder(key))  # recently used: kept by prune()
        return out

    def save(self, key: str, parts: dict[str, str], stats: dict[Site, SiteStats]) -> None:
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        for site, s in stats.items():
            meta = {"format": STATS_FORMAT, "key": key, "n": str(s.n), "site": site_name(site),
                    "parts": json.dumps(parts, sort_keys=True)}
            save_tensors(folder / f"{site_name(site)}.safetensors",
                         {"gram": s.gram, "sample": s.sample.contiguous()}, meta)

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the key's lock: one process computes while the others wait (then find the files)."""
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self.prune(keep=key)

    def prune(self, keep: str) -> None:
        """Remove the least recently used key folders beyond ``max_entries`` (skipping any another process holds)."""
        try:
            folders = sorted((p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                             key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return
        for old in folders[self.max_entries:]:
            if old.name == keep:
                continue
            try:
                with open(old / ".lock", "a+") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    trash = self.root / f".trash-{old.name}-{uuid.uuid4().hex[:8]}"
                    os.rename(old, trash)
                shutil.rmtree(trash, ignore_errors=True)
            except OSError:
                continue


def device_parts(model: torch.nn.Module) -> dict[str, str]:
    """Statistics computed on another device type or dtype differ in the last bits: part of the key."""
    p = next(model.parameters())
    return {"device": p.device.type, "dtype": str(p.dtype).replace("torch.", "")}
