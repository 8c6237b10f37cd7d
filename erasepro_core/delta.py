"""Checkpoint deltas: only the edited tensors, in one safetensors file, bound to their base model.

The base fingerprint is sha256 over the original bytes of every edited tensor (sorted by key), so a
delta refuses to apply to any other base.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from erasepro_core import __version__
from erasepro_core.adapters import resolve_parameter
from erasepro_core.io import atomic_write

FORMAT = "erasepro-delta"
FORMAT_VERSION = "1"


class DeltaMismatchError(ValueError):
    """The delta was made for a different base model."""


class DeltaFormatError(ValueError):
    """The file is not an ErasePro delta."""


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
                 ) -> Path:
    """Write a safetensors file atomically (tensors made contiguous and moved to CPU)."""
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata=metadata))


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    """The tensor's bytes, without a copy when it is already a contiguous CPU tensor (hashlib reads the buffer)."""
    t = t.detach().cpu().contiguous()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over key, dtype, shape and bytes of each tensor, in key order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}|{str(t.dtype)}|{tuple(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


@dataclass
class Delta:
    """Edited tensors (on-disk keys, e.g. ``unet.…attn2.to_k.weight``) plus provenance and the report."""

    tensors: dict[str, torch.Tensor]
    fingerprint: str
    spec: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)
    library_version: str = __version__
    format_version: str = FORMAT_VERSION

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": self.format_version, "library_version": self.library_version,
            "fingerprint": self.fingerprint, "spec": self.spec, "report": self.report, "base": self.base,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary name, then rename)."""
        meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in self.metadata.items()}
        return save_tensors(path, self.tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Delta:
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except FileNotFoundError:
            raise
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise DeltaFormatError(f"{path} is not a readable safetensors file: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise DeltaFormatError(f"{path} is a safetensors file but not an ErasePro delta")
        if meta.get("format_version") != FORMAT_VERSION:
            raise DeltaFormatError(f"{path} has delta format {meta.get('format_version')!r}; "
                                   f"this ErasePro reads {FORMAT_VERSION!r}")
        parse = lambda k: json.loads(meta[k]) if k in meta else {}  # noqa: E731
        return cls(tensors=tensors, fingerprint=meta["fingerprint"], spec=parse("spec"), report=parse("report"),
                   base=parse("base"), library_version=meta.get("library_version", ""),
                   format_version=meta["format_version"])

    def summary(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint, "library_version": self.library_version,
            "format_version": self.format_version, "base": self.base,
            "n_tensors": len(self.tensors),
            "n_parameters": sum(t.numel() for t in self.tensors.values()),
            "edits": self.spec.get("edits"), "method": self.spec.get("method"),
            "summary": self.report.get("summary"),
        }


def _as_delta(delta_or_path: Delta | str | os.PathLike) -> Delta:
    return delta_or_path if isinstance(delta_or_path, Delta) else Delta.load(delta_or_path)


def _targets(pipe: Any, delta: Delta) -> dict[str, torch.nn.Parameter]:
    try:
        params = {k: resolve_parameter(pipe, k) for k in delta.tensors}
    except KeyError as exc:
        raise DeltaMismatchError(f"delta does not fit this pipeline: {exc.args[0]}") from exc
    for k, p in params.items():
        if tuple(p.shape) != tuple(delta.tensors[k].shape):
            raise DeltaMismatchError(f"delta tensor {k} has shape {tuple(delta.tensors[k].shape)}, "
                                     f"the pipeline's has {tuple(p.shape)}")
    found = fingerprint({k: p for k, p in params.items()})
    if found != delta.fingerprint:
        raise DeltaMismatchError(
            f"delta was made for base {delta.fingerprint[:12]}… but this pipeline is {found[:12]}…: "
            "apply it to the model it was computed on (or to an unedited copy of it)"
        )
    return params


@torch.no_grad()
def apply_delta(pipe: Any, delta_or_path: Delta | str | os.PathLike) -> dict[str, torch.Tensor]:
    """Write the delta's tensors into ``pipe`` in place; returns the originals (for :func:`revert`)."""
    delta = _as_delta(delta_or_path)
    params = _targets(pipe, delta)
    originals = {k: p.detach().clone() for k, p in params.items()}
    for k, p in params.items():
        p.copy_(delta.tensors[k].to(device=p.device, dtype=p.dtype))
    return originals


@torch.no_grad()
def revert(pipe: Any, originals: dict[str, torch.Tensor]) -> None:
    for k, t in originals.items():
        resolve_parameter(pipe, k).copy_(t)


@contextlib.contextmanager
def applied_delta(pipe: Any, delta_or_path: Delta | str | os.PathLike) -> Iterator[Any]:
    """Apply a delta for the duration of a ``with`` block, then restore the base exactly."""
    originals = apply_delta(pipe, delta_or_path)
    try:
        yield pipe
    finally:
        revert(pipe, originals)
