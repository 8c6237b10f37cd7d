"""Preserve statistics persisted on disk: reloaded exactly, keyed so any change recomputes, one writer at a time."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from erasepro_core import ErasureSpec, erase
from erasepro_core.adapters import adapter_for
from erasepro_core.preserve import FeatureCache, model_key
from erasepro_core.stats_store import StatsStore
from erasepro_core.warmup import warm

ROOT = Path(__file__).resolve().parents[1]
SPEC = ErasureSpec(edits=[{"target": "van gogh", "anchor": "art"}], templates=["{}", "a photo of {}"])


def _bytes(result) -> dict[str, bytes]:
    return {k: v.contiguous().view(torch.uint8).numpy().tobytes() for k, v in result.delta.tensors.items()}


def test_stored_statistics_reload_exactly_and_give_the_same_delta(tmp_path, sd_pipe):
    store = StatsStore(tmp_path)
    first = warm(sd_pipe, FeatureCache(store=store))
    assert first["modes"]["last"]["computed"]  # computed and written
    fresh = FeatureCache(store=store)
    again = warm(sd_pipe, fresh)
    assert again["modes"]["last"]["computed"] == []  # a new process-like cache loads them
    spec = SPEC.model_copy(update={"method": SPEC.method.model_copy(update={"schedule": "front"})})
    loaded = erase(sd_pipe, spec, cache=fresh)
    assert fresh.computed == []
    computed = erase(sd_pipe, spec, cache=FeatureCache(store=None))
    assert _bytes(loaded) == _bytes(computed)


def test_any_key_part_changing_recomputes(tmp_path, sd_pipe):
    store = StatsStore(tmp_path)
    warm(sd_pipe, FeatureCache(store=store))
    n_keys = len(list(tmp_path.iterdir()))
    assert warm(sd_pipe, FeatureCache(store=store), preserve_tokens=["all"])["modes"]["all"]["computed"]
    other = copy.deepcopy(sd_pipe)
    with torch.no_grad():
        adapter_for(other).towers[0].fc2(0).weight.mul_(1.01)
    assert warm(other, FeatureCache(store=store))["modes"]["last"]["computed"]
    assert len(list(tmp_path.iterdir())) == n_keys + 2
    # A different preserve set is another key too.
    cache = FeatureCache(store=store)
    adapter = adapter_for(sd_pipe)
    cache.generic_stats(adapter, model_key(adapter), ["a red circle", "a dog"], {0: []}, last_only=True)
    assert cache.computed == [("ctx",)]


def test_a_damaged_file_is_recomputed_not_trusted(tmp_path, sd_pipe):
    store = StatsStore(tmp_path)
    warm(sd_pipe, FeatureCache(store=store), progressive=False)
    (ctx,) = list(tmp_path.glob("*/ctx.safetensors"))
    ctx.write_bytes(ctx.read_bytes()[:100])
    assert warm(sd_pipe, FeatureCache(store=store), progressive=False)["modes"]["last"]["computed"] == ["ctx"]


def test_concurrent_workers_compute_each_site_once(tmp_path):
    code = ("import json, sys\nfrom erasepro_core.pipeline import load_pipeline, quiet_libraries\n"
            "from erasepro_core.warmup import warm\nquiet_libraries()\n"
            "pipe = load_pipeline('bundled', device='cpu', dtype='float32')\n"
            "print(json.dumps(warm(pipe)))\n")
    env = {**os.environ, "ERASEPRO_STATS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(3)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    computed = [s for o in outs for s in o["modes"]["last"]["computed"]]
    assert sorted(computed) == sorted(set(computed)) and "ctx" in computed  # each site by exactly one process
    assert len(list(tmp_path.glob("*/*.safetensors"))) == len(computed)
