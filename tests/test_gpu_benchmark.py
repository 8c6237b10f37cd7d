"""benchmarks/gpu.py runs on a CPU (tiny pipelines, ``--device cpu``): every row measured, residuals in range."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_runs_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--tiny",
                          "--sizes", "sd14", "flux", "sd3", "--concepts", "1", "2", "--repeats", "2",
                          "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["device"].startswith("CPU") and data["tiny"] and data["target_met"] is None
    rows = data["rows"]
    erase_rows = [r for r in rows if r["what"] == "erase"]
    # 3 sizes × 3 methods × 2 concept counts, none skipped
    assert len(erase_rows) == 18 and not any(r.get("skipped") for r in rows)
    assert {r["size"] for r in erase_rows} == {"sd14", "flux", "sd3"}
    for r in erase_rows:
        assert r["warm"]["n"] == 2 and 0 < r["warm"]["median"] and r["warm"]["ci95"][0] <= r["warm"]["mean"]
        assert (r["first_s"] is not None) == (r["concepts"] == 1)
        assert r["peak_gpu_mb"] is None  # no GPU memory on a CPU
        if r["method"].startswith("ErasePro") and r["columns"] < 0.25 * r["width"]:
            assert r["max_residual"] <= 1e-5  # exact below a quarter of the width (residual_ridge's exact_below)
        elif r["method"].startswith("ErasePro"):
            assert 0 < r["kv_residual"] < 1  # the soft residual: a penalty, reported
    (gen,) = [r for r in rows if r["what"] == "generate"]
    assert gen["size"] == "sd14" and gen["latency"]["n"] == 2 and gen["latency"]["median"] > 0
    assert "| sd14 | erase | ErasePro default | 2 |" in res.stdout


def test_gpu_benchmark_stops_at_its_budget(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--tiny",
                          "--sizes", "sd14", "--concepts", "1", "--repeats", "1", "--budget-s", "0",
                          "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert rows and all(r.get("skipped") == "budget" for r in rows)
