"""Every ```python block of README.md and docs/*.md runs as written (on the bundled model, offline)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, m in enumerate(FENCE.finditer(path.read_text(encoding="utf-8"))):
            if m.group(1).startswith("# against a running service"):  # tests/test_client.py runs these
                continue
            out.append((f"{path.relative_to(ROOT)}#{i}", m.group(1)))
    return out


BLOCKS = _blocks()


def test_the_docs_have_python_examples():
    assert any(name.startswith("README.md") for name, _ in BLOCKS)


@pytest.mark.parametrize(("name", "code"), BLOCKS, ids=[n for n, _ in BLOCKS])
def test_python_block_runs_as_written(tmp_path, name, code):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=env)
    assert res.returncode == 0, f"{name} failed:\n{res.stderr[-3000:]}"
