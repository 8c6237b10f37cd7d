"""A bounded LRU of loaded base pipelines (and of loaded deltas), one per worker process.

Cached pipelines are shared by every job the process runs, so they are never edited for good: erasure does
not modify its input, generation and export apply a delta with ``applied_delta`` (which restores the exact
original tensors), and any job that ends abnormally while a delta may be applied evicts that pipeline.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erasepro_core.devices import pick_device
from erasepro_core.families import family_of_label
from erasepro_jobs.registry import BaseModelInfo
from erasepro_jobs.storage import Storage

log = logging.getLogger("erasepro.worker")


@dataclass
class Loaded:
    """A cache lookup: the pipeline, how long loading took (0 when cached) and whether it was a hit."""

    pipe: Any
    info: BaseModelInfo
    load_s: float
    hit: bool
    device: str
    dtype: str


def pick_dtype(info: BaseModelInfo, device: str) -> str | None:
    """The registry's dtype (``None``: as stored, or the family's accelerator dtype: bfloat16 for FLUX) on an
    accelerator; always float32 on CPU, where half precision is slow or unsupported (the bundled model, for one,
    is stored in float16)."""
    if device.startswith("cpu"):
        return "float32"
    if info.dtype is None:
        family = family_of_label(info.family)
        return family.accelerator_dtype if family else None
    return info.dtype


class PipelineCache:
    """``get(info)`` returns a loaded pipeline, loading it (and evicting the least recently used) on a miss."""

    def __init__(self, capacity: int, device: str | None = None,
                 loader: Callable[..., Any] | None = None) -> None:
        self.capacity = max(1, capacity)
        self.device = pick_device(device)
        self._loader = loader
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple, Any] = OrderedDict()

    def _key(self, info: BaseModelInfo) -> tuple:
        return (info.name, info.ref, pick_dtype(info, self.device), self.device)

    def _load(self, info: BaseModelInfo) -> Any:
        if self._loader is not None:
            return self._loader(info.ref, device=self.device, dtype=pick_dtype(info, self.device))
        from erasepro_core.pipeline import load_pipeline

        return load_pipeline(info.ref, device=self.device, dtype=pick_dtype(info, self.device))

    def get(self, info: BaseModelInfo) -> Loaded:
        key = self._key(info)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return Loaded(self._items[key], info, 0.0, True, self.device, str(key[2] or "as stored"))
        t0 = time.perf_counter()
        pipe = self._load(info)
        load_s = time.perf_counter() - t0
        with self._lock:
            self._items[key] = pipe
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                old, _ = self._items.popitem(last=False)
                log.info("model cache: evicted %s", old[0])
                self._release()
        log.info("model cache: loaded %s in %.2fs", info.name, load_s)
        return Loaded(pipe, info, load_s, False, self.device, str(key[2] or "as stored"))

    def evict(self, info: BaseModelInfo) -> None:
        """Drop a pipeline (after a job that may have left it modified ended abnormally)."""
        with self._lock:
            if self._items.pop(self._key(info), None) is not None:
                log.warning("model cache: evicted %s after an interrupted job", info.name)
                self._release()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._release()

    def names(self) -> list[str]:
        with self._lock:
            return [k[0] for k in self._items]

    def _release(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


class DeltaCache:
    """Loaded deltas by (storage key, sha256), checked against the manifest's sha256 when first read.

    On the file system the delta is read in place; from an object store it is downloaded once into
    ``files_dir`` (named by its sha256, verified before it is kept), so any worker can use any worker's delta.
    """

    def __init__(self, capacity: int = 8, files_dir: Path | None = None, max_files: int = 64) -> None:
        self.capacity = capacity
        self.files_dir = files_dir
        self.max_files = max_files
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, storage: Storage, key: str, sha256: str) -> Any:
        from erasepro_core.delta import Delta

        item = (key, sha256)
        with self._lock:
            if item in self._items:
                self._items.move_to_end(item)
                return self._items[item]
        path = self._local_file(storage, key, sha256)
        delta = Delta.load(path)
        with self._lock:
            self._items[item] = delta
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return delta

    def _local_file(self, storage: Storage, key: str, sha256: str) -> Path:
        from erasepro_jobs.storage.base import sha256_file

        name = key.rsplit("/", 1)[-1]
        local = storage.local_path(key)
        if local is not None:
            if not local.is_file():
                raise FileNotFoundError(f"{key} is missing from {storage.description}")
            found = sha256_file(local)
        else:
            if self.files_dir is None:
                raise RuntimeError("DeltaCache needs a files_dir to download deltas into")
            local = self.files_dir / f"{sha256}.safetensors"
            if local.is_file() and sha256_file(local) == sha256:
                os.utime(local)  # most recently used
                return local
            found = storage.download(key, local)
            self._trim()
        if found != sha256:
            if storage.local_path(key) is None:
                local.unlink(missing_ok=True)
            raise ValueError(f"{name} does not match its manifest (sha256 {found[:12]}... != {sha256[:12]}...)")
        return local

    def _trim(self) -> None:
        """Keep the newest ``max_files`` downloaded deltas (they are a cache: the store has them all)."""
        files = sorted(self.files_dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[self.max_files:]:
            old.unlink(missing_ok=True)
