"""Every module imports: a name moved or renamed in one module breaks an importer that no other test runs (the
benchmarks, the robustness measurement). One subprocess, so nothing imported here leaks into other tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CODE = """
import importlib, pathlib, pkgutil, sys
sys.path.insert(0, "benchmarks")
bad = []
for name in ("erasepro_core", "erasepro_jobs", "worker", "app", "erasepro"):
    pkg = importlib.import_module(name)
    for m in pkgutil.walk_packages(pkg.__path__, name + "."):
        if not m.name.endswith("__main__"):
            try:
                importlib.import_module(m.name)
            except Exception as exc:
                bad.append(f"{m.name}: {exc!r}")
for f in sorted(pathlib.Path("benchmarks").glob("*.py")):
    try:
        importlib.import_module(f.stem)
    except Exception as exc:
        bad.append(f"{f}: {exc!r}")
print("\\n".join(bad))
sys.exit(1 if bad else 0)
"""


def test_every_module_and_benchmark_imports() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
