"""The prompt guard's two files beside an erasure's delta (built by the erasure job) and its verdict on a
generation's prompt (read by the generation job): see :mod:`erasepro_core.guard`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from erasepro_jobs import store
from erasepro_jobs.storage.base import sha256_file
from worker.runner import JobFailed, interruptible
from worker.runtime import WorkerState


def save_guard(state: WorkerState, pipe: Any, spec: Any, tenant: str, job_id: str, tmp: Path,
               files: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build the erasure's prompt guard on the base model (before any delta) and put its files."""
    from erasepro_core.guard import GUARD_JSON, GUARD_TENSORS, guard_for_spec

    with interruptible(state):
        guard = guard_for_spec(pipe, spec)
    guard.save(tmp)
    files = dict(files)
    for name in (GUARD_TENSORS, GUARD_JSON):
        path = tmp / name
        files[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        state.storage.put_file(store.checkpoint_key(tenant, job_id, name), path, move=True,
                               sha256=files[name]["sha256"])
    return files, {"mode": guard.mode, "threshold": guard.threshold, "targets": guard.targets,
                   "signature_columns": guard.stats.get("signature_columns")}


def guard_verdict(state: WorkerState, tenant: str, erasure_id: str, manifest: dict, pipe: Any,
                  prompt: str) -> Any:
    """The erasure's prompt guard and its verdict on ``prompt`` (``None`` when the erasure has no guard), read
    with the base text encoder (before the delta is applied)."""
    guard = load_guard(state, tenant, erasure_id, manifest)
    return None if guard is None else (guard, guard.check(pipe, prompt))


def load_guard(state: WorkerState, tenant: str, erasure_id: str, manifest: dict) -> Any:
    """The erasure's :class:`~erasepro_core.guard.PromptGuard` (its files checked against the manifest's
    sha256), or ``None`` when the erasure has none."""
    from erasepro_core.guard import GUARD_JSON, GUARD_TENSORS, PromptGuard

    guard_files = manifest.get("files", {})
    if not manifest.get("guard") or GUARD_TENSORS not in guard_files or GUARD_JSON not in guard_files:
        return None
    blobs = {}
    for name in (GUARD_TENSORS, GUARD_JSON):
        data = state.storage.get_bytes(store.checkpoint_key(tenant, erasure_id, name))
        if hashlib.sha256(data).hexdigest() != guard_files[name]["sha256"]:
            raise JobFailed(f"the prompt guard of erasure {erasure_id} does not match its checksum")
        blobs[name] = data
    return PromptGuard.from_bytes(blobs[GUARD_TENSORS], blobs[GUARD_JSON])
