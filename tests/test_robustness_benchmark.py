"""The robustness benchmark's smoke version runs on the bundled model and writes numbers in range."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from erasepro_core.shapes import bundled_judge_available, bundled_model_available

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.attacks,
              pytest.mark.skipif(not (bundled_model_available() and bundled_judge_available()),
                                 reason="the bundled shapes model or judge is not in this checkout")]


def test_smoke_robustness_numbers_are_in_range(tmp_path):
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "robustness.py"), "--smoke", "--no-efficacy",
                          "--methods", "unedited", "erasepro harden 2", "--attacks", "vocabulary", "closed_form",
                          "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    case = json.loads(out.read_text())["cases"]["circle->square"]
    assert set(case) == {"unedited", "erasepro harden 2"}
    for entry in case.values():
        assert set(entry["attacks"]) == {"vocabulary@20", "vocabulary_rate", "closed_form@2"}
        assert all(0.0 <= v <= 1.0 for v in entry["attacks"].values())
    assert case["unedited"]["attacks"]["closed_form@2"] >= 0.9  # the ceiling: the attack works on the base
    assert len(case["erasepro harden 2"]["report"]["hardening"]) == 3
    plot = tmp_path / "p.png"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "robustness_plot.py"), str(out), "--out",
                          str(plot), "--attacks", "vocabulary"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and plot.stat().st_size > 0, res.stderr[-2000:]
