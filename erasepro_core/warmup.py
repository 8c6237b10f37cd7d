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
    prompts = generic_preserve_prompts(pipe)
    out: dict[str, Any] = {"prompts": len(prompts), "store": str(cache.store.root) if cache.store else None,
                           "modes": {}}
    for mode in preserve_tokens:
        t, computed = time.perf_counter(), []
        spaces = [seg for space in adapter_for(pipe).spaces for seg in space.segments or [space]]
        for space in spaces:  # FLUX: the T5 tokens and the pooled CLIP, each its own statistics; SD-3: per segment
            layers = {ti: default_layers(tw.n_context_layers) if progressive and tw.progressive else []
                      for ti, tw in enumerate(space.towers)}
            cache.generic_stats(space, model_key(space), prompts, layers, last_only=mode == "last")
            computed += [".".join(map(str, s)) for s in cache.computed]
        out["modes"][mode] = {"computed": computed, "seconds": round(time.perf_counter() - t, 3)}
    return out
