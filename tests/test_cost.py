"""The torch-free memory estimate against measured peaks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from erasepro_core import cost


def test_cost_is_importable_without_torch():
    code = "import sys, erasepro_core.cost; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mirrored_constants_match_the_library():
    from erasepro_core import erasure, kv, prefix, solver

    assert cost.COLUMN_BATCH == solver.COLUMN_BATCH
    assert cost.MAX_GROUP_ROWS == prefix.MAX_GROUP_ROWS
    assert cost.MAX_HELDOUT_EDITS == erasure.MAX_HELDOUT_EDITS
    assert (cost.MAX_REPORT_COLUMNS, cost.MAX_REPORT_EXTRA, cost.MAX_REPORT_HELDOUT) == (
        kv.MAX_REPORT_COLUMNS, kv.MAX_REPORT_EXTRA, kv.MAX_REPORT_HELDOUT)


def test_presets_match_the_sized_pipelines_layout():
    """The SD preset's K/V size is what the SD-1.4-sized UNet's cross-attention holds (counted from its config,
    without building it: 16 transformer blocks)."""
    sd = cost.model_dims("sd-sized")
    assert sd.context_width == 768 and sd.kv_params == 2 * 768 * (5 * 320 + 5 * 640 + 6 * 1280)
    assert cost.model_dims("sdxl-sized").context_width == 2048


def _edits(n: int) -> list[dict[str, str]]:
    words = ["van gogh", "monet", "snoopy", "pikachu", "tiger", "eiffel tower", "owl", "robot"]
    return [{"target": f"{words[i % len(words)]} {i}", "anchor": "art"} for i in range(n)]


@pytest.mark.parametrize("policy", ["last", "to_eos", "to_end"])
def test_column_estimate_bounds_the_real_count(sd_pipe, policy):
    from erasepro_core.adapters import adapter_for
    from erasepro_core.features import build_pairs
    from erasepro_core.spec import DEFAULT_TEMPLATES

    edits = _edits(12)
    pairs = build_pairs(adapter_for(sd_pipe).towers[0].tokenizer, [(e["target"], e["anchor"]) for e in edits],
                        list(DEFAULT_TEMPLATES), policy)
    est = cost.erase_memory({"edits": edits, "token_policy": policy}, cost.model_dims_of(sd_pipe))
    assert pairs.n_columns <= est.columns <= 1.5 * pairs.n_columns + 10


@pytest.mark.parametrize(("n", "extra"), [(300, {}), (100, {"schedule": "front"})])
def test_estimate_bounds_the_measured_peak_of_a_dspace_job(n, extra):
    """A job whose columns dominate (300 concepts to_end: ~100k columns of width 128; or 100 with the streamed
    progressive stage, its fc2 solves past their width too): the estimate is above the measured peak (what a
    memory limit needs) and not absurdly so."""
    import torch

    from erasepro_core import erase
    from erasepro_core.preserve import FeatureCache
    from erasepro_core.tiny import tiny_sd_pipeline

    torch.set_num_threads(1)
    pipe = tiny_sd_pipeline(seed=1, text_hidden=128, text_layers=2, cross_attention_dim=128)
    cache = FeatureCache(store=None)
    erase(pipe, {"edits": _edits(1)}, cache=cache)  # warm-up: statistics, library buffers
    spec = {"edits": _edits(n), "token_policy": "to_end", **extra}
    res, peak = cost.peak_rss_during(lambda: erase(pipe, spec, cache=cache), every_s=0.002)
    est = cost.erase_memory(spec, cost.model_dims_of(pipe))
    assert est.dspace and est.columns >= res.report["n_constraints"]
    assert peak <= est.total, (peak, est.parts)
    assert est.total - cost.FIXED_BYTES <= 3 * peak, (peak, est.parts)
