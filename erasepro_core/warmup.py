"""``warm``: compute a base model's generic preserve statistics ahead of time (stored on disk, see
:mod:`erasepro_core.stats_store`), so the first erasure on it pays no preserve pass."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from erasepro_core.adapters import adapter_for
from erasepro_core.plan import default_layers
from erasepro_core.preserve import FeatureCache, default_cache, generic_preserve_prompts, model_key


@torch.no_grad()
def warm(pipe: Any, cache: FeatureCache | None = None, *, progressive: bool = True,
         preserve_tokens: Sequence[str] = ("last",)) -> dict[str, Any]:
    """Statistics for the K/V stage and (``progressive``) the default progressive layers, per token mode.

    Returns what was computed and what was already there (a second call computes nothing).
    """
    cache = cache or default_cache()
    adapter = adapter_for(pipe)
    prompts = generic_preserve_prompts(pipe)
    mkey = model_key(adapter)
    layers = {ti: default_layers(t.n_context_layers) if progressive else [] for ti, t in enumerate(adapter.towers)}
    out: dict[str, Any] = {"prompts": len(prompts), "store": str(cache.store.root) if cache.store else None,
                           "modes": {}}
    for mode in preserve_tokens:
        t = time.perf_counter()
        cache.generic_stats(adapter, mkey, prompts, layers, last_only=mode == "last")
        out["modes"][mode] = {"computed": [".".join(map(str, s)) for s in cache.computed],
                              "seconds": round(time.perf_counter() - t, 3)}
    return out
