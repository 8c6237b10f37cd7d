"""The erasure-quality benchmark's smoke version runs on the bundled model and emits numbers in range.

The quality bars themselves belong to the benchmark's tables, not to a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from erasepro_core.shapes import bundled_judge_available, bundled_model_available

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not (bundled_model_available() and bundled_judge_available()),
                                reason="the bundled shapes model or judge is not in this checkout")


def test_smoke_benchmark_numbers_are_in_range(tmp_path):
    csv = tmp_path / "extra.csv"
    # set "dup" only holds a solver prompt: it is dropped, reported and skipped (it used to crash the run)
    csv.write_text("prompt,shape,colour,set\na crimson disc,circle,red,mine\nthe green box,square,green,mine\n"
                   "a photo of a circle,circle,red,dup\n")
    out = tmp_path / "q.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "erasure_quality.py"), "--smoke",
                          "--prompts", str(csv), "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "skipped prompt set(s) ['dup']" in res.stdout
    data = json.loads(out.read_text())
    case = data["cases"]["circle->square"]
    assert set(case) == {"unedited", "UCE 2025 defaults", "erasepro front, all layers"}
    assert data["config"]["uce_sweep"] == {"uce_lambda": [0.1, 0.5, 2.0], "uce_preserve_scale": [0.1, 1.0, 10.0]}
    for method, m in case.items():
        assert set(m["efficacy"]) == {"plain", "complex", "paraphrase", "heldout", "mine"}
        for key in ("efficacy", "anchor", "specificity", "drift"):
            for v in m[key].values():
                assert v is None or 0.0 <= v <= 1.0, (method, key, v)
        for v in m["specificity_change"].values():
            assert v is None or -1.0 <= v <= 1.0
        # pooled counts: efficacy over every set's target prompts, specificity over the others, with intervals
        eff, spec = m["pooled"]["efficacy"], m["pooled"]["specificity"]
        assert 0 < eff["n"] and 0 < spec["n"] and 0 <= eff["k"] <= eff["n"] and 0 <= spec["k"] <= spec["n"]
        assert eff["ci95"][0] <= eff["rate"] <= eff["ci95"][1]
        set_rates = [v for v in m["efficacy"].values() if v is not None]
        assert min(set_rates) <= eff["rate"] <= max(set_rates)
    assert "eff pooled [95 %] (k/n)" in res.stdout
    rep = case["erasepro front, all layers"]["report"]["summary"]
    assert rep["kv_residual"] < 1e-4  # the zero-residual constraint holds on the shipped model


def test_bad_csv_is_a_clear_error(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("prompt,shape\na circle,circle\n")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "erasure_quality.py"), "--smoke",
                          "--prompts", str(csv)], capture_output=True, text=True, timeout=600)
    assert res.returncode != 0 and "missing column" in res.stderr
