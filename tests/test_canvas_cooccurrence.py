"""The co-occurrence benchmark on a tiny budget: prompts, spec and one run's shape."""

from __future__ import annotations

import pytest

from erasepro_core.canvas.cooccurrence import build_object_spec, cooccurrence_prompts, run_cooccurrence


def test_prompts_name_the_object_or_never() -> None:
    with_p = cooccurrence_prompts("star", 20, 0, with_object=True)
    without = cooccurrence_prompts("star", 20, 0, with_object=False)
    assert all("star" in p.text and 2 <= len(p.scene.objects) <= 3 for p in with_p)
    assert all("star" not in p.text for p in without)
    assert all(p.scene.artist is None for p in with_p + without)
    assert [p.text for p in with_p] == [p.text for p in cooccurrence_prompts("star", 20, 0, with_object=True)]


def test_spec_preserves_the_other_objects() -> None:
    spec = build_object_spec("heart", {"method": "uce"})
    assert [e.target for e in spec.edits] == ["heart"] and "heart" not in spec.preserve
    assert "star" in spec.preserve
    with pytest.raises(ValueError, match="object must be one of"):
        build_object_spec("dragon")


def test_run_on_a_tiny_budget() -> None:
    r = run_cooccurrence("star", options={"method": "erasepro"}, n_images=2, steps=2)
    for side in ("unedited", "edited"):
        assert r[side]["erased"]["n"] == 2 and r[side]["control_objects"]["n"] == 2
        assert r[side]["kept"]["n"] >= 2  # 1-2 other objects per scene
    assert r["columns"] > 0 and r["width"] == 128


@pytest.mark.parametrize("flag", [["--objects", "dragon"], ["--methods", "default,nonsense"]])
def test_the_benchmark_refuses_unknown_names_before_drawing(flag: list[str]) -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "canvas_cooccurrence.py"
    done = subprocess.run([sys.executable, str(script), *flag], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert ("dragon" if "dragon" in flag else "nonsense") in done.stderr and "not among" in done.stderr
