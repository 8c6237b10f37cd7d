"""What one ``erase`` job costs in memory above the loaded pipeline, from the spec and the model's dimensions
alone: torch-free (the service's door imports it to size a job's memory limit; the worker can record a model's
:class:`ModelDims` with :func:`model_dims_of`).

Column counts are bounded from above by the templates' word counts and every large buffer is counted at its
peak overlap, plus a fixed allowance for the allocator and per-call transients, calibrated on measured peaks
(tests/test_cost.py, docs/benchmarks.md): the estimate was above every measured peak, by 4 % at the largest
(SD-1.4-sized, 1,000 concepts `to_end`, 3.07 GB). It is an estimate: a memory limit should add its own margin.

  columns     X and Y (d × n, float64 while n ≤ d, float32 past it), the solve's working set (n-space: the
              n × n Gram, its factor and G; d-space: a few d × d matrices and one float64 column batch)
  encoding    one suffix group's layer transients (unedited towers stream their blocks); with progressive
              layers also every token's state (d wide: the stage streams its blocks too, never holding every
              token's fc2 input) and an edited layer's paired columns
  weights     the written K/V weights (and fc2 weights of the progressive stage)
  report      the bounded report columns, held-out columns and the preserve drift sample
  pairs       the pairing's per-column bookkeeping (Python tuples, index tensors)
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from erasepro_core.families import Sizes, hub_sizes
from erasepro_core.spec import ErasureSpec

# Mirrors of the library's constants (asserted equal in tests/test_cost.py; importing them would pull torch).
COLUMN_BATCH = 4096  # erasepro_core.solver
MAX_GROUP_ROWS = 128  # erasepro_core.prefix
MAX_HELDOUT_EDITS = 16  # erasepro_core.erasure
MAX_REPORT_COLUMNS, MAX_REPORT_EXTRA, MAX_REPORT_HELDOUT = 256, 1024, 1024  # erasepro_core.kv
FIXED_BYTES = 256 * 2**20  # allocator slack, thread-local buffers, the report and the delta's bookkeeping
MB = 2**20


@dataclass(frozen=True)
class TowerDims:
    """One text tower: width (context features it gives), layers, MLP width, token positions."""

    width: int
    layers: int
    intermediate: int
    max_length: int = 77


@dataclass(frozen=True)
class ModelDims:
    """A pipeline's text path: towers whose widths concatenate into the context, and the K/V sites' weights."""

    towers: tuple[TowerDims, ...]
    kv_params: int  # Σ d_out · d_in over every site that reads the context
    dtype_bytes: int = 4

    @property
    def context_width(self) -> int:
        return sum(t.width for t in self.towers)


def dims_of(sizes: Sizes) -> ModelDims:
    """The text path of a family row's hub sizes (:class:`erasepro_core.families.Sizes`)."""
    return ModelDims(tuple(TowerDims(*t) for t in sizes.towers), sizes.kv_params)


# SD-1.4 and SDXL sizes, from their rows in erasepro_core.families.
PRESETS: dict[str, ModelDims] = {"sd-sized": dims_of(hub_sizes("sd1")), "sdxl-sized": dims_of(hub_sizes("sdxl"))}


def model_dims(name: str) -> ModelDims:
    """A preset: ``sd-sized`` (SD-1.x) or ``sdxl-sized``."""
    return PRESETS[name]


def model_dims_of(pipe: Any) -> ModelDims:
    """The dims of a loaded SD/SDXL pipeline, read from its configs and modules (duck-typed: no torch import)."""
    towers = []
    for name in ("text_encoder", "text_encoder_2"):
        enc = getattr(pipe, name, None)
        if enc is None:
            continue
        c = enc.config
        penultimate = getattr(pipe, "text_encoder_2", None) is not None  # SDXL reads hidden_states[-2]
        towers.append(TowerDims(int(c.hidden_size), int(c.num_hidden_layers) - penultimate,
                                int(c.intermediate_size), int(getattr(pipe.tokenizer, "model_max_length", 77))))
    kv = sum(int(m.weight.numel()) for n, m in pipe.unet.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v")))
    return ModelDims(tuple(towers), kv)


_WORD = re.compile(r"\w+|[^\w\s]")


def _tokens_at_most(text: str) -> int:
    """Tokens CLIP's BPE gives ``text`` at most, roughly: 3 per word (rare words split), 1 per punctuation mark."""
    return sum(3 if w[0].isalnum() else 1 for w in _WORD.findall(text))


def _tokens_at_least(text: str) -> int:
    """At least one token per word or punctuation mark."""
    return len(_WORD.findall(text))


def columns_per_prompt(template: str, concept: str, policy: str, max_length: int) -> tuple[int, int]:
    """(constrained columns at most, positions encoded at most) for one target prompt."""
    prefix, _, suffix = template.partition("{}")
    head_min = 1 + _tokens_at_least(prefix + concept)  # BOS + prefix + concept: the concept's last position + 1
    full = min(max_length, 2 + _tokens_at_most(template.replace("{}", concept)))
    if policy == "last":
        return 1, min(max_length, 1 + _tokens_at_most(prefix + concept))
    if policy == "to_eos":
        return min(max_length - head_min + 1, 2 + _tokens_at_most(suffix)), full
    return max_length - head_min + 1, max_length


@dataclass
class MemoryEstimate:
    """Bytes per part (see the module docstring) and the column count they follow from."""

    columns: int
    context_width: int
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def dspace(self) -> bool:
        return self.columns > self.context_width


def erase_memory(spec: ErasureSpec | dict, dims: ModelDims) -> MemoryEstimate:
    """Peak bytes ``erase(pipe, spec)`` adds above a loaded pipeline whose text path is ``dims``, on CPU
    (warm: preserve statistics cached, as a running worker has them)."""
    if not isinstance(spec, ErasureSpec):
        spec = ErasureSpec.model_validate(spec)
    method = spec.method
    policy = method.pairing_policy()
    length = max(t.max_length for t in dims.towers)
    n = tokens = longest = 0
    anchors: set[tuple[str, str]] = set()
    for e in spec.edits:
        for tpl in spec.templates:
            cols, toks = columns_per_prompt(tpl, e.target, policy, length)
            n += cols
            tokens += toks
            longest = max(longest, toks)
            if (tpl, e.anchor) not in anchors:
                anchors.add((tpl, e.anchor))
                tokens += columns_per_prompt(tpl, e.anchor, policy, length)[1]
    n_held = tokens_held = 0
    for e in spec.edits[:MAX_HELDOUT_EDITS]:
        for tpl in spec.heldout_templates:
            cols, toks = columns_per_prompt(tpl, e.target, policy, length)
            n_held += cols
            tokens_held += 2 * toks
    d = dims.context_width
    rounds = method.hardening_rounds()
    n_all = n * (rounds + 1)
    dspace = n_all > d
    parts: dict[str, int] = {}
    col_bytes = 4 if dspace else 8
    # X and Y (plus, with two towers, one side's per-tower columns while X and Y are stacked from them: the other
    # side's are already released); hardening keeps the original target columns in float64 beside them.
    towers = len(dims.towers)
    parts["columns"] = 2 * n_all * d * col_bytes + (n * d * 4 if towers > 1 else 0) + \
        (2 * n * d * 8 if rounds else 0)
    if dspace:
        parts["solve"] = 3 * COLUMN_BATCH * d * 8 + 10 * d * d * 8
    else:
        parts["solve"] = 4 * n_all * n_all * 8 + 3 * n_all * d * 8
    schedule, _ = method.progressive_stage()
    widest = max(dims.towers, key=lambda t: t.width)
    rows = len(spec.edits) * len(spec.templates) + len(anchors)
    group = min(MAX_GROUP_ROWS, rows) * longest  # one suffix group's tokens
    if schedule != "none":
        # Streamed by block: every target and anchor token's state (and, through an edited layer, the targets'
        # post-attention state), one block's layer transients, and an edited layer's paired columns (fc2 inputs
        # in float32 and float64, outputs, anchors, gap and residual in float64), per tower.
        parts["encoding"] = sum((tokens + tokens_held) * 2 * t.width * 4 + group * (8 * t.width + 2 * t.intermediate)
                                * 4 + (n + n_held) * (12 * t.intermediate + 36 * t.width) for t in dims.towers)
        parts["fc2"] = sum(t.width * t.intermediate * (dims.dtype_bytes + 16) * min(t.layers, 4)
                           for t in dims.towers)
    else:
        # One suffix group: its tokens' states through a layer (attention, MLP) and the cached prefixes' keys.
        parts["encoding"] = group * (8 * widest.width + 2 * widest.intermediate) * 4
    parts["weights"] = dims.kv_params * dims.dtype_bytes
    report_cols = min(n, MAX_REPORT_COLUMNS) + min(n_all - n, MAX_REPORT_EXTRA) + min(n_held, MAX_REPORT_HELDOUT)
    parts["report"] = n_held * d * (8 + 8 + 4) + report_cols * d * 4 * 4
    # The pairing's Python bookkeeping: a (row, position, row, position) tuple and gather indices per column
    # (≈ 0.15 kB each; 55 MB at 361k columns, measured to matter at 1,000 concepts `to_end`).
    parts["pairs"] = (n + n_held) * 256
    parts["fixed"] = FIXED_BYTES
    return MemoryEstimate(n_all, d, parts)


def rss_bytes() -> int:
    """This process's resident set size (Linux: ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def peak_rss_during(fn: Callable[[], Any], every_s: float = 0.005) -> tuple[Any, int]:
    """``(fn(), peak resident set while it ran minus the one before it, in bytes)``, sampled every ``every_s``
    in a thread: what the estimates above are checked against (tests/test_cost.py, benchmarks/)."""
    base, peak, stop = rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(every_s)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        stop.set()
        t.join()
    return out, max(peak[0] - base, 0)
