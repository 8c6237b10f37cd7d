"""Image judges: the registry picks one per preset and base model; the real NudeNet detector (nudenet's ONNX file
through onnxruntime) reads rendered images; a tiny random CLIP saved to a folder exercises the CLIP judge's
wiring; a missing package or folder is a clear error; judge_erasure reports rates with sample sizes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from erasepro_core.judges import JUDGES, JudgeUnavailable, judge_for, judge_problem, load_judge, rate, wilson
from erasepro_core.judges.base import Verdict
from erasepro_core.judges.nudenet import LABELS, decode, nms


def test_registry_picks_the_judge_per_preset_and_model() -> None:
    assert {"shapes", "canvas", "nudenet", "clip"} <= set(JUDGES)
    assert judge_for("bundled") == "shapes" and judge_for("canvas") == "canvas" and judge_for("sd15") == "clip"
    assert judge_for("sd15", "nudity") == "nudenet" and judge_for("bundled", "nudity") == "nudenet"
    assert judge_for("sd15", "artists") == "clip"
    assert "not a judge" in judge_problem("nudes")
    with pytest.raises(ValueError, match="not an image judge"):
        load_judge("shapes")


def test_clip_without_a_folder_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("ERASEPRO_CLIP_MODEL", raising=False)
    assert "set ERASEPRO_CLIP_MODEL" in judge_problem("clip")
    with pytest.raises(JudgeUnavailable, match="nothing is downloaded"):
        load_judge("clip")
    assert "no config.json" in judge_problem("clip", clip_model=tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")  # a pickle is never loaded
    assert "no .safetensors" in judge_problem("clip", clip_model=tmp_path)


def rendered() -> list[Image.Image]:
    """Shapes-world renders and drawn scenes: nothing a nudity detector should flag."""
    from erasepro_core.shapes.world import render_dataset

    images = [Image.fromarray(x).resize((256, 256)) for x in render_dataset(4, seed=1)[0]]
    for k in range(4):
        im = Image.new("RGB", (320, 240), (30 * k, 120, 200))
        d = ImageDraw.Draw(im)
        d.rectangle((40, 40, 160, 200), fill=(200, 60 + 20 * k, 40))
        d.ellipse((180, 60, 300, 180), fill=(20, 160, 60))
        images.append(im)
    return images


def test_the_real_nudenet_detector_reads_rendered_images() -> None:
    if judge_problem("nudenet"):
        pytest.fail(judge_problem("nudenet"))  # onnxruntime and nudenet are in the judges extra: they must be here
    judge = load_judge("nudenet")
    images = rendered()
    dets = judge.detect(images)
    assert len(dets) == len(images)
    for found in dets:
        for d in found:
            assert d["class"] in LABELS and 0.25 <= d["score"] <= 1 and len(d["box"]) == 4
    verdicts = judge.verdicts(images)
    assert [v.flagged for v in verdicts] == [False] * len(images)  # no exposed body part in shapes and boxes
    assert judge.describe()["name"] == "nudenet" and judge.describe()["threshold"] == 0.6
    r = rate(verdicts)
    assert r["n"] == len(images) and r["rate"] == 0.0 and r["ci95"][0] == 0.0 and 0 < r["ci95"][1] < 0.5


def test_decoding_scales_boxes_and_suppresses_overlaps() -> None:
    out = np.zeros((4 + len(LABELS), 3), np.float32)
    out[:4, 0] = (100, 100, 40, 40)   # centre x, y, w, h at 320 px
    out[:4, 1] = (102, 101, 40, 40)   # nearly the same box, lower score: suppressed
    out[:4, 2] = (250, 250, 20, 20)   # elsewhere, below the candidate score: dropped
    out[4 + LABELS.index("FEMALE_BREAST_EXPOSED"), 0] = 0.9
    out[4 + LABELS.index("FEMALE_BREAST_EXPOSED"), 1] = 0.8
    out[4 + LABELS.index("FACE_FEMALE"), 2] = 0.1
    dets = decode(out, scale=2.0)
    assert dets == [{"class": "FEMALE_BREAST_EXPOSED", "score": pytest.approx(0.9), "box": [160.0, 160.0, 80.0, 80.0]}]
    assert nms(np.array([[0, 0, 10, 10], [20, 20, 5, 5]], float), np.array([0.5, 0.6])) == [1, 0]


def test_rates_carry_their_sample_size_and_interval() -> None:
    r = rate([Verdict(True, 0.9), Verdict(False, 0.0), Verdict(False, 0.1), Verdict(True, 0.7)])
    assert (r["rate"], r["flagged"], r["n"]) == (0.5, 2, 4)
    lo, hi = wilson(2, 4)
    assert r["ci95"] == [round(lo, 4), round(hi, 4)] and lo < 0.5 < hi


def test_tiny_clip_and_nudenet_judge_an_erasure_of_a_tiny_pipeline(tmp_path) -> None:
    from erasepro_core import erase
    from erasepro_core.judges.evaluate import eval_items, judge_erasure
    from erasepro_core.presets import apply_preset
    from erasepro_core.spec import ErasureSpec
    from erasepro_core.tiny import tiny_sd_pipeline, write_tiny_clip

    pipe = tiny_sd_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    spec = ErasureSpec.model_validate(apply_preset({}, "artists", {"names": ["van gogh", "monet"]}))
    result = erase(pipe, spec)
    items = eval_items(spec.model_dump(mode="json"))[:3]
    assert [i["target"] for i in items] == ["van gogh", "monet", "van gogh"]  # every name first
    clip = load_judge("clip", clip_model=write_tiny_clip(tmp_path / "clip"))
    report, images = judge_erasure(pipe, result.delta, items, clip, samples=2, seed=5, steps=2)
    assert report["judge"]["name"] == "clip" and report["images_per_side"] == 6 and report["samples_per_prompt"] == 2
    assert report["before"]["n"] == report["after"]["n"] == 6
    assert len(images) == 3 and all(len(b) == len(a) == 2 for b, a in images)
    assert len(report["per_prompt"]) == 3 and len(report["per_prompt"][0]["after"]["verdicts"]) == 2
    before = [np.asarray(im) for im in images[0][0]]
    again, _ = judge_erasure(pipe, result.delta, items[:1], clip, samples=2, seed=5, steps=2)
    assert again["per_prompt"][0]["before"] == report["per_prompt"][0]["before"]  # same seeds, same verdicts
    assert not all(np.array_equal(b, np.asarray(a)) for b, a in zip(before, images[0][1], strict=True)), \
        "the erasure changed nothing on its own target's prompt"
    nudenet, _ = judge_erasure(pipe, result.delta, items[:1], load_judge("nudenet"), samples=1, steps=2)
    assert nudenet["judge"]["name"] == "nudenet" and nudenet["before"]["n"] == 1
    with pytest.raises(ValueError, match="samples"):
        judge_erasure(pipe, result.delta, items, clip, samples=0)


def test_moderation_benchmark_smoke_says_which_judge_and_sample_size(tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "m.json"
    res = subprocess.run([sys.executable, str(root / "benchmarks" / "moderation.py"), "--smoke", "--json", str(out)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(root)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "judge nudenet, 2 prompts x 1 images = 2 per side" in res.stdout
    data = json.loads(out.read_text())
    assert data["judge"]["name"] == "nudenet" and data["preset"]["name"] == "nudity"
    assert data["images_per_side"] == data["prompts"] * data["samples_per_prompt"] == 2
    assert data["before"]["n"] == data["after"]["n"] == 2 and len(data["after"]["ci95"]) == 2
