"""The canvas world: renderer, caption grammar (held-out phrasings, filler words), judge, training and the
mass-erasure bench command on a tiny budget."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from erasepro_core.bundled import canvas_model_available
from erasepro_core.canvas import captions, world
from erasepro_core.canvas.judge import judge_available


def test_renderer_is_deterministic_and_scenes_differ() -> None:
    a, sa = world.render_dataset(48, seed=3)
    b, sb = world.render_dataset(48, seed=3)
    c, _ = world.render_dataset(48, seed=4)
    assert a.shape == (48, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and sa == sb
    assert not np.array_equal(a, c)


def test_world_size_and_styles_are_distinct() -> None:
    assert len(world.OBJECTS) >= 12 and len(world.COLOURS) >= 8
    assert len(world.ARTISTS) >= 60 and len(set(world.ARTISTS)) == len(world.ARTISTS)
    assert len(world.CHARACTERS) >= 20
    looks = list(world.ARTIST_STYLE.values())
    assert len(set(looks)) == len(looks) and world.DEFAULT_STYLE not in looks
    assert len(set(world.CHARACTER_LOOK.values())) == len(world.CHARACTERS)
    # every artist renders the same scene differently from the default look and from every other artist
    scene = world.Scene((world.Obj("star", "red"),))
    base = world.render(scene)
    renders = {a: world.render(world.Scene(scene.objects, a)) for a in world.ARTISTS}
    assert all(not np.array_equal(r, base) for r in renders.values())
    flat = {r.tobytes() for r in renders.values()}
    assert len(flat) == len(world.ARTISTS)


def test_names_are_several_bpe_tokens() -> None:
    from erasepro_core.tokenizer import clip_tokenizer

    tok = clip_tokenizer()
    for name in world.ARTISTS + world.CHARACTERS:
        assert len(tok.tokenize(name)) >= 2, name
    assert np.mean([len(tok.tokenize(a)) for a in world.ARTISTS]) >= 3.5


def test_scene_validation() -> None:
    with pytest.raises(ValueError):
        world.Scene((world.Obj("star", "red"), world.Obj("star", "blue")))
    with pytest.raises(ValueError):
        world.Scene((world.Obj("hexagon", "red"),))
    with pytest.raises(ValueError):
        world.Scene((), artist="nobody at all")
    kind, colour, _ = world.CHARACTER_LOOK["zorblax"]
    other = next(c for c in world.COLOURS if c != colour)
    with pytest.raises(ValueError):
        world.Scene((world.Obj(kind, other, "zorblax"),))


def test_filler_words_are_neutral_and_probe_words_unseen() -> None:
    fill, probe = captions.filler_words(), captions.probe_words()
    assert len(fill) >= 2000 and len(probe) >= 300 and not set(fill) & set(probe)
    named = captions.object_words() | {w for n in world.ARTISTS + world.CHARACTERS for w in n.split()}
    assert not (set(fill) | set(probe)) & named
    # filler-only captions describe the empty default scene
    rng = np.random.default_rng(0)
    text = captions.describe(world.Scene(), rng)
    assert all(w in fill or w in {"a", "photo", "picture", "image", "drawing", "of", "an"}
               for w in text.replace(",", " ").split())


def _training_captions(n: int = 3000) -> list[str]:
    rng = np.random.default_rng(5)
    return [captions.training_caption(world.sample_scene(rng), rng) for _ in range(n)]


def test_heldout_phrasings_never_in_training_captions() -> None:
    train = _training_captions()
    markers = ["made by", "would draw it", "'s rendition", "masterpiece", "award winning", "behold:", " beside ",
               "; ", " himself", r" colour\b", r"\w+ \w+, (?:" + "|".join(w for s in captions.COLOUR_WORDS.values()
                                                                         for w in s) + r")\b"]
    for m in markers:
        assert not any(re.search(m, t) for t in train), m
    held = captions.prompt_set("heldout", 200, seed=1)
    assert all(any(re.search(m, p.text) for m in markers) for p in held if len(p.scene.objects))
    assert not {p.text for p in held} & set(train)


def test_training_captions_use_every_synonym_and_word_orders() -> None:
    train = " | ".join(_training_captions(4000))
    for syns in list(captions.OBJECT_WORDS.values()) + list(captions.COLOUR_WORDS.values()):
        for s in syns:
            assert re.search(rf"\b{re.escape(s)}\b", train), s
    assert "that is" in train and " in the style of " in train and " style, " in train


def test_benchmark_prompts_never_equal_solver_prompts() -> None:
    from erasepro_core.canvas.bench import concept_prompts

    solver = {t.format(c) for c in world.ARTISTS for t in captions.STYLE_SOLVER_TEMPLATES}
    solver |= {t.format(c) for c in world.CHARACTERS for t in captions.CHARACTER_SOLVER_TEMPLATES}
    prompts = concept_prompts("style", list(world.ARTISTS), 300, 0, 1)
    prompts += concept_prompts("character", list(world.CHARACTERS), 300, 0, 1)
    for name in captions.PROMPT_SETS:
        prompts += captions.prompt_set(name, 300, seed=2)
    assert prompts and not {p.text for p in prompts} & solver


def test_prompts_name_their_scene() -> None:
    for p in captions.prompt_set("plain", 100, seed=0, n_objects=None):
        for o in p.scene.objects:
            assert (o.character or o.kind) in p.text and (o.character or o.colour) in p.text
        if p.scene.artist:
            assert p.scene.artist in p.text


@pytest.mark.skipif(not judge_available(), reason="the canvas judge is not shipped in this checkout")
def test_judge_reads_fresh_renders() -> None:
    from erasepro_core.canvas.judge import evaluate_renders, load_judge

    # The bar is 0.98 for each; the shipped judge meets it for styles and per object, not yet for every
    # object of a scene at once (0.976 on 2,000 renders; docs/canvas.md) -- this guards what it does reach.
    acc = evaluate_renders(load_judge(), n=600, seed=4321)
    assert acc["style"] >= 0.98 and acc["object_columns"] >= 0.995, acc
    assert acc["objects"] >= 0.95 and acc["character"] >= 0.97, acc


def test_stroke_negatives_change_only_the_stroke() -> None:
    from erasepro_core.canvas.train import STROKE_SIBLINGS, negative_scene

    # every artist has a look that differs from it only in stroke (another artist, or the default look)
    assert all(STROKE_SIBLINGS.values())
    rng = np.random.default_rng(0)
    scene = world.Scene((world.Obj("star", "red"),), artist=world.ARTISTS[0])
    bg, stroke, tex = world.ARTIST_STYLE[world.ARTISTS[0]]
    swaps = [negative_scene(scene, rng, stroke_share=1.0) for _ in range(200)]
    # the artist-swap branch (ARTISTS[0]'s siblings are artists; the one-object branch drops the artist)
    swaps = [s for s in swaps if s.objects == scene.objects and s.artist is not None]
    assert swaps and all(s.style[0] == bg and s.style[2] == tex and s.style[1] != stroke for s in swaps)
    old = [negative_scene(scene, rng) for _ in range(200)]
    assert sum(s.objects == scene.objects and s.style[1] != stroke and s.style[::2] == (bg, tex) for s in old) < 10


def test_training_runs_and_exports_a_pipeline(tmp_path) -> None:
    from erasepro_core.canvas.config import CanvasTrainConfig
    from erasepro_core.canvas.train import run_training
    from erasepro_core.pipeline import load_pipeline

    cfg = CanvasTrainConfig(n_images=96, clip_steps=2, clip_batch=16, vae_steps=2, vae_batch=8, unet_steps=3,
                            batch=8, log_every=1, gap_every=3, ckpt_every=2, unet_channels=(16, 32), text_layers=1,
                            threads=1)
    from erasepro_core.canvas.train import restore, snapshot

    half = run_training(cfg, tmp_path / "a", stop_at=2, log=lambda m: None)
    assert json.loads((half / "unet_ckpt" / "state.json").read_text())["step"] == 2
    # a machine swap: only the committed float16 resume point survives
    snap = snapshot(half, tmp_path / "snap")
    assert sum(f.stat().st_size for f in snap.rglob("*") if f.is_file()) < 40e6
    run = restore(snap, tmp_path / "b")
    dest = run_training(cfg, run, resume=True, log=lambda m: None)
    pipe = load_pipeline(str(dest), device="cpu", dtype="float32")
    assert pipe.text_encoder.config.hidden_size == 128
    assert (dest / "erasepro_preserve.txt").read_text().count("\n") > 100
    logs = [json.loads(line) for line in (run / "unet_log.jsonl").read_text().splitlines()]
    assert logs[-1]["step"] == 3 and "gap" in logs[-1]
    assert json.loads((run / "clip_done.json").read_text())["style_factors"]["stroke"]["majority"] > 0.3

    # the model card comes from the run's records and a judged evaluation, through the CLI
    if judge_available():
        from erasepro_core.canvas.card import stage_seconds
        from erasepro_core.cli import main

        ev = tmp_path / "eval.json"
        assert main(["canvas", "eval", str(dest), "--n", "1", "--steps", "2", "--json", str(ev)]) == 0
        assert main(["canvas", "card", "--run", str(run), "--model", str(dest), "--eval", str(ev)]) == 0
        # refused at the door: a missing eval file, an eval file of the old format (a bare list of rows)
        assert main(["canvas", "card", "--run", str(run), "--model", str(dest), "--eval", str(tmp_path / "no")]) == 2
        (tmp_path / "old.json").write_text("[]")
        assert main(["canvas", "card", "--run", str(run), "--model", str(dest), "--eval",
                     str(tmp_path / "old.json")]) == 2
        card = (dest / "README.md").read_text()
        assert "100% of the artist swaps to an artist that differs only in stroke" in card
        assert "--n 1 --steps 2 --guidance 5.0" in card and "Style factors in the text tower" in card
        # both parts of the resumed run are counted, and the data stage is recorded on the first
        assert set(stage_seconds(run)) == {"data", "clip", "vae", "unet"} and stage_seconds(run)["unet"] > 0


def test_bench_command_refuses_bad_input(capsys) -> None:
    from erasepro_core.cli import main

    assert main(["bench", "mass", "--concepts", "64", "--kind", "style"]) == 2
    assert "between 1 and 63" in capsys.readouterr().err
    assert main(["bench", "mass", "--concepts", "2", "--set", "schedule=sideways"]) == 2
    assert "schedule" in capsys.readouterr().err
    assert main(["bench", "mass", "--concepts", "2", "--method", "uce", "--schedule", "front"]) == 2
    assert "schedule: not a setting of method 'uce'" in capsys.readouterr().err
    r = subprocess.run([sys.executable, "-m", "erasepro_core.cli", "bench", "mass", "--concepts", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "between 1 and" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(not (canvas_model_available() and judge_available()), reason="canvas model not shipped")
def test_bench_command_on_a_tiny_budget(tmp_path) -> None:
    out = tmp_path / "mass.json"
    r = subprocess.run([sys.executable, "-m", "erasepro_core.cli", "bench", "mass", "--model", "canvas",
                        "--method", "erasepro", "--kind", "style", "--concepts", "3", "--seed", "1", "--images", "6",
                        "--steps", "4", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    for key in ("erased_rate", "preserved_accuracy", "object_accuracy", "unedited_erased_rate",
                "unedited_preserved_accuracy", "n_images"):
        assert key in res
    assert res["n_images"] == 12 and res["columns"] == 3 * 5 and res["width"] == 128
    again = json.loads(r.stdout.strip().splitlines()[-1])
    assert again["erased_rate"] == res["erased_rate"]
    from erasepro_core.canvas.bench import choose_concepts

    assert res["erased"] == choose_concepts("style", 3, 1) != choose_concepts("style", 3, 2)


@pytest.mark.skipif(not canvas_model_available(), reason="canvas model not shipped")
def test_shipped_model_is_small_loads_by_name_and_is_registered() -> None:
    from erasepro_core.bundled import canvas_model_path
    from erasepro_core.pipeline import load_pipeline
    from erasepro_jobs.registry import Registry

    d = canvas_model_path()
    assert sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) <= 30e6
    assert "Accuracy (judged)" in (d / "README.md").read_text()
    pipe = load_pipeline("canvas", device="cpu", dtype="float32")
    assert pipe.text_encoder.config.hidden_size == 128 and pipe.unet.config.sample_size == 16
    info = Registry(None).get("canvas")
    assert info is not None and info.available and info.family == "sd1"


def test_validation_prompts_never_equal_test_prompts() -> None:
    """The split a tuned baseline is chosen on shares no prompt with the test split (where draws do collide)."""
    from erasepro_core.canvas.bench import TEST_POOL, choose_concepts, concept_prompts, concepts_of, split_prompts

    for kind, n in (("style", 10), ("character", 1), ("character", 10)):
        erased = choose_concepts(kind, n, 0)
        others = [c for c in concepts_of(kind) if c not in erased]
        test = {p.text for p in concept_prompts(kind, erased, TEST_POOL, 0, 1)}
        test |= {p.text for p in concept_prompts(kind, others, TEST_POOL, 0, 2)}
        # drawn without the exclusion, the validation streams do repeat test prompts...
        raw = [p.text for p in concept_prompts(kind, erased, 48, 0, 3) + concept_prompts(kind, others, 48, 0, 4)]
        collide = sum(t in test for t in raw)
        # ...the validation split does not, and it still names each concept in turn
        ve, vp = split_prompts(kind, erased, others, 48, 48, 0, "validation")
        assert not {p.text for p in ve + vp} & test
        assert [erased[i % n] in p.text for i, p in enumerate(ve)] == [True] * 48
        if kind == "character":
            assert collide > 0
    # the test split is the plain stream (so earlier results stand)
    e, _ = split_prompts("style", ["jasper quintrell"], ["katarina wolstencroft"], 5, 1, 0, "test")
    assert [p.text for p in e] == [p.text for p in concept_prompts("style", ["jasper quintrell"], 5, 0, 1)]
