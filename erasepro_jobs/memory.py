"""Peak memory of a job, estimated at the door (torch-free), and the limit each job runs under in the worker.

One function per job kind, each in bytes *above the loaded pipeline* (a worker loads a base model once and keeps
it; the job's own working memory is what a request controls):

* :func:`erasure_bytes` — :func:`erasepro_core.cost.erase_memory` (columns × width × sites, the solve, the
  encoding, the written weights; the solver's own model, kept with the solver) plus the preserve statistics
  (preserve prompts × positions × width, float64) when they are not cached yet;
* :func:`generation_bytes` — UNet activations ∝ images × latent pixels × widest UNet block, the self-attention
  maps ∝ images × (latent pixels)² of the first block, the VAE decoder ∝ images × pixels × its widest block;
* :func:`evaluation_bytes` — the attacks' generations (one image at a time, with gradients through the text
  tower: twice a generation) at the model's native resolution;
* :func:`export_bytes` — one copy of the weights being written (the edited pipeline, or the LoRA factors).

The door refuses a job whose estimate exceeds ``ERASEPRO_JOB_MEMORY`` (:func:`parse_bytes`; default
:func:`default_job_memory`), and the worker runs the job's heavy part under ``RLIMIT_AS`` = its address space
when the part starts + that limit + :data:`ADDRESS_SLACK` (:func:`job_memory_limit`), so a job the estimate got
wrong fails alone with :class:`MemoryLimitExceeded` instead of taking the worker (or the host) down.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from erasepro_core.cost import PRESETS, ModelDims, TowerDims, dims_of, erase_memory
from erasepro_core.families import DEFAULT_LABEL, hub_sizes
from erasepro_core.io import read_config

GiB, MiB = 2**30, 2**20
DEFAULT_SHARE = 0.4  # of the machine's memory, per job (two lanes at once still leave room for the models)
# Address space is not resident memory: thread stacks, malloc arenas and shared libraries' reservations count in
# RLIMIT_AS while using no RAM, so the enforced limit is the job's budget plus this (ERASEPRO_JOB_MEMORY_SLACK).
ADDRESS_SLACK = 1 * GiB
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str | int) -> int:
    """``"8GiB"`` -> 8·2³⁰, ``"500MB"`` -> 5·10⁸, ``"1234"`` -> 1234 (decimal and binary units, any case)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"a size is a number with an optional unit (B, MB, GB, MiB, GiB...), got {text!r}")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise ValueError(f"a size must be positive, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    """``8589934592`` -> ``'8.0 GiB'``."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def default_job_memory() -> int:
    """:data:`DEFAULT_SHARE` of this machine's physical memory (the worker's, where the API runs beside it)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 16 * GiB
    return int(total * DEFAULT_SHARE)


# ------------------------------------------------------------------------------------------- model facts
@dataclass(frozen=True)
class ModelFacts:
    """What the estimates need of a base model: its text path (:class:`ModelDims`), its UNet's widest block, the
    VAE's widest block, and the bytes of its weights."""

    dims: ModelDims
    unet_width: int = 1280
    vae_width: int = 512
    weight_bytes: int = 4 * GiB


def _safetensors_header(path: Path) -> dict[str, Any]:
    """A safetensors file's header (tensor names, dtypes, shapes), read without loading a tensor."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 * MiB:
                return {}
            return json.loads(f.read(n))
    except (OSError, ValueError, struct.error):
        return {}


_KV_SUFFIXES = ("attn2.to_k.weight", "attn2.to_v.weight", "add_k_proj.weight", "add_v_proj.weight")


@lru_cache(maxsize=32)
def _folder_facts(folder: str, stamp: float) -> ModelFacts | None:
    root = Path(folder)
    index = read_config(root / "model_index.json")
    if not index:
        return None
    towers = []
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):  # _3: SD-3's T5
        if not (isinstance(index.get(name), list) and index[name][0]):
            continue
        c = read_config(root / name / "config.json")
        tok = read_config(root / name.replace("text_encoder", "tokenizer") / "tokenizer_config.json")
        width = c.get("hidden_size") or c.get("d_model")
        layers = c.get("num_hidden_layers") or c.get("num_layers")
        inter = c.get("intermediate_size") or c.get("d_ff")
        if not (width and layers and inter):
            return None
        length = tok.get("model_max_length")
        length = int(length) if isinstance(length, int) and length < 100_000 else 77
        towers.append(TowerDims(int(width), int(layers), int(inter), length))
    if not towers:
        return None
    kv = weights = 0
    for part in root.iterdir():
        for f in part.glob("*.safetensors") if part.is_dir() else ():
            weights += f.stat().st_size
            if part.name in ("unet", "transformer"):
                for key, meta in _safetensors_header(f).items():
                    if key.endswith(_KV_SUFFIXES) and isinstance(meta, dict):
                        rows, cols = (list(meta.get("shape", [])) + [0, 0])[:2]
                        kv += int(rows) * int(cols)
    unet = read_config(root / "unet" / "config.json") or read_config(root / "transformer" / "config.json")
    vae = read_config(root / "vae" / "config.json")
    unet_width = max(unet.get("block_out_channels") or [unet.get("num_attention_heads", 24) *
                                                        unet.get("attention_head_dim", 128)])
    vae_width = max(vae.get("block_out_channels") or [512])
    return ModelFacts(ModelDims(tuple(towers), kv or PRESETS["sd-sized"].kv_params), int(unet_width),
                      int(vae_width), weights or 4 * GiB)


def hub_facts(label: str) -> ModelFacts:
    """A hub model's facts (its configs are not on this machine): its family row's sizes for this registry label
    (:func:`erasepro_core.families.hub_sizes`; SD-1's for an unknown label)."""
    sizes = hub_sizes(label)
    return ModelFacts(dims_of(sizes), sizes.denoiser_width, sizes.vae_width, sizes.weight_bytes)


def model_facts(info: Any) -> ModelFacts:
    """The facts of a registry entry (:class:`erasepro_jobs.registry.BaseModelInfo`): read from its diffusers
    folder (configs and safetensors headers) when it is on this machine, else its family row's sizes
    (:func:`hub_facts`)."""
    source = getattr(info, "source", "")
    folder = None
    if source == "bundled":
        from erasepro_jobs.registry import bundled_model_dir

        folder = bundled_model_dir()
    elif source == "path":
        folder = Path(getattr(info, "ref", ""))
    if folder is not None:
        try:
            stamp = (folder / "model_index.json").stat().st_mtime
        except OSError:
            stamp = -1.0
        facts = _folder_facts(str(folder), stamp)
        if facts is not None:
            return facts
    return hub_facts(str(getattr(info, "family", DEFAULT_LABEL)))


# -------------------------------------------------------------------------------------------- estimates
def erasure_bytes(spec: Any, info: Any) -> int:
    """Peak bytes of an erasure above the loaded pipeline: :func:`erase_memory` plus the preserve statistics
    (prompts × positions kept × context width, float64, with their encoding)."""
    facts = model_facts(info)
    est = erase_memory(spec, facts.dims).total
    preserve = len(spec.preserve) + (int(getattr(info, "preserve_prompts", 0)) if spec.default_preserve else 0)
    length = max(t.max_length for t in facts.dims.towers)
    positions = length if getattr(spec.method, "preserve_tokens", "last") == "all" else 1
    width = facts.dims.context_width
    widest = max(facts.dims.towers, key=lambda t: t.width)
    # the columns (float64) and their Gram, and one encoding batch's layer states (64 prompts at a time)
    est += preserve * positions * width * 8 + 2 * width * width * 8 + 64 * length * (8 * widest.width +
                                                                                     2 * widest.intermediate) * 4
    return int(est)


def generation_bytes(info: Any, width: int, height: int, num_images: int) -> int:
    """Peak bytes of sampling ``num_images`` images of ``width × height`` (classifier-free guidance doubles the
    UNet batch): activations + the first block's self-attention maps + the VAE decoder, float32."""
    facts = model_facts(info)
    latent = (width // 8) * (height // 8)
    batch = 2 * num_images
    unet = batch * latent * facts.unet_width * 4 * 12
    attention = batch * 8 * latent * latent * 4  # heads × queries × keys, one block at a time
    vae = num_images * width * height * facts.vae_width * 4 * 3
    return int(unet + attention + vae + 128 * MiB)


def evaluation_bytes(info: Any) -> int:
    """Peak bytes of an evaluation: its attacks draw one image at a time at the native resolution, some with
    gradients through the text tower (twice a generation), and keep the judge beside the pipeline."""
    res = int(getattr(getattr(info, "limits", None), "resolution", 512) or 512)
    return 2 * generation_bytes(info, res, res, 1) + 256 * MiB


def export_bytes(info: Any, fmt: str) -> int:
    """Peak bytes of an export: the diffusers format writes the edited pipeline (one copy of the largest
    component in flight); the LoRA formats factor each edited site (its weights, twice)."""
    facts = model_facts(info)
    if fmt == "diffusers":
        return int(facts.weight_bytes + 256 * MiB)
    return int(4 * facts.dims.kv_params * 4 + 256 * MiB)


def over_limit(what: str, estimate: int, limit: int) -> str | None:
    """The door's message when ``estimate`` exceeds ``limit`` (``None`` when it fits)."""
    if estimate <= limit:
        return None
    return (f"this {what} needs about {format_bytes(estimate)} of memory ({estimate} bytes) by the server's "
            f"estimate, above its per-job limit of {format_bytes(limit)} ({limit} bytes, ERASEPRO_JOB_MEMORY); "
            "split it into smaller jobs (fewer edits, templates, preserve prompts, tokens or images)")


# ---------------------------------------------------------------------------------------- enforcement
class MemoryLimitExceeded(MemoryError):
    """A job asked for more memory than its limit allows (the worker's other jobs are unaffected)."""


def address_space() -> int:
    """This process's virtual memory size now (``VmSize``), in bytes (0 where /proc is absent)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def is_allocation_failure(exc: BaseException) -> bool:
    """An allocation refused (Python's, numpy's, or torch's CPU allocator's ``can't allocate memory``)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "cannot allocate memory" in text
                                              or "not enough memory" in text)


@contextmanager
def job_memory_limit(limit: int | None, slack: int = ADDRESS_SLACK) -> Iterator[int | None]:
    """Run the block under ``RLIMIT_AS`` = address space now + ``limit`` + ``slack`` (the soft
    limit only, restored after: the process may raise it back, its other jobs run under their own). Yields the
    limit set (``None``: not enforced here — no ``limit``, no ``resource`` module, or the hard limit is lower)."""
    try:
        import resource
    except ImportError:  # not POSIX
        yield None
        return
    base = address_space()
    if not limit or not base:
        yield None
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = base + int(limit) + int(slack)
    if hard != resource.RLIM_INFINITY and cap > hard:
        cap = hard
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
