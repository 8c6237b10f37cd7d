"""The shapes world: renderer, caption grammar, bundled pipeline and judge."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from erasepro_core import shapes
from erasepro_core.shapes import captions, world


def test_renderer_is_deterministic_given_seed() -> None:
    a_img, a_lab = world.render_dataset(64, seed=3)
    b_img, b_lab = world.render_dataset(64, seed=3)
    c_img, _ = world.render_dataset(64, seed=4)
    assert a_img.shape == (64, 16, 16, 3) and a_img.dtype == np.uint8
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)


def test_renders_show_their_attributes() -> None:
    for attrs in world.all_attributes():
        img = world.render(attrs).astype(float)
        assert img[0, 0].sum() == 0, "background is black"
        lit = img.sum(-1) > 60
        mean = img[lit].mean(0)
        assert np.argmax(mean) == np.argmax(world.RGB[attrs.colour])
        filled = world.render(world.Attributes(attrs.shape, attrs.colour, attrs.size, "filled"))
        if attrs.style == "outlined":
            assert img.sum() < 0.9 * filled.astype(float).sum(), attrs
    small = world.render(world.Attributes("circle", "red", "small")).astype(float).sum()
    large = world.render(world.Attributes("circle", "red", "large")).astype(float).sum()
    assert large > 2 * small


def test_attribute_count() -> None:
    assert len(world.all_attributes()) == 4 * 5 * 2 * 2
    with pytest.raises(ValueError):
        world.Attributes("hexagon", "red")


def test_caption_grammar_covers_every_attribute() -> None:
    rng = np.random.default_rng(0)
    seen: set[str] = set()
    for _ in range(20):
        for attrs in world.all_attributes():
            p = captions.caption(attrs, rng)
            text = f" {p.text.replace(',', ' ')} "
            assert any(f" {w} " in text for w in captions.SHAPE_WORDS[attrs.shape]), p.text
            assert any(f" {w} " in text for w in captions.COLOUR_WORDS[attrs.colour]), p.text
            if attrs.style == "outlined":
                assert any(f" {w} " in text for w in captions.STYLE_WORDS["outlined"]), p.text
            if p.size is not None:
                assert any(f" {w} " in text for w in captions.SIZE_WORDS[attrs.size]), p.text
            seen.update(w for w in captions.all_words() if f" {w} " in text)
    assert seen == captions.all_words(), "every synonym is used in training"
    for kind, values in world.ATTRIBUTES.items():
        assert set(captions.WORDS[kind]) == set(values)


def test_prompt_sets_are_disjoint_and_fit_the_tokenizer() -> None:
    from erasepro_core.tokenizer import clip_tokenizer

    assert not set(captions.HELDOUT_TEMPLATES) & set(captions.TRAIN_TEMPLATES)
    solver = {s for w in captions.all_words() | set(world.SHAPES) | set(world.COLOURS)
              for s in captions.solver_prompts(w)}
    tok = clip_tokenizer(20)
    texts = []
    for name in captions.PROMPT_SETS:
        ps = captions.prompt_set(name, per_combo=2)
        assert len(ps) == 40 and all(p.set == name for p in ps)
        assert ps == captions.prompt_set(name, per_combo=2), "deterministic"
        assert not {p.text for p in ps} & solver
        texts += [p.text for p in ps]
    assert captions.prompt_set("plain")[0].text == "a red circle"
    rng = np.random.default_rng(1)
    texts += [captions.caption(a, rng).text for a in world.all_attributes() for _ in range(10)]
    longest = max(len(tok(t).input_ids) for t in texts)
    assert longest <= 20


def test_fill_articles() -> None:
    assert captions.fill("{a} {desc}", "circle", "red", "small", "outlined") == "a small outlined red circle"
    assert captions.fill("{a} {desc}", "circle", "red", None, "outlined") == "an outlined red circle"
    assert captions.fill("{a} {mods}{shape} that is {colour}", "disc", "azure") == "a disc that is azure"


def test_package_import_is_light_and_cli_registers() -> None:
    code = (
        "import sys, argparse\n"
        "import erasepro_core.shapes, erasepro_core.shapes.cli as c\n"
        "p = argparse.ArgumentParser(); c.add_parser(p.add_subparsers(dest='command'))\n"
        "a = p.parse_args(['shapes', 'train', '--out', 'x', '--resume', '--unet-steps', '7'])\n"
        "assert a.cfg_unet_steps == 7 and a.resume and a.func is c.run\n"
        "p.parse_args(['shapes', 'eval', '--seeds', '0'])\n"
        "assert 'torch' not in sys.modules, 'importing the shapes package must not import torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_latent_stat_folding() -> None:
    import torch

    from erasepro_core.shapes.train import fold_latent_stats, make_vae

    torch.manual_seed(0)
    vae = make_vae().eval()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample
        mean, std = z.mean((0, 2, 3)), z.std((0, 2, 3))
        fold_latent_stats(vae, mean, std)
        z2 = vae.encode(x).latent_dist.mean
        y2 = vae.decode(z2).sample
    assert torch.allclose(z2, (z - mean[None, :, None, None]) / std[None, :, None, None], atol=1e-4)
    assert torch.allclose(y, y2, atol=1e-4)


@pytest.mark.skipif(not shapes.bundled_model_available(), reason="shipped weights not committed yet")
def test_bundled_pipeline_loads_offline_and_generates() -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(shapes.bundled_model_path(), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.tokenizer.model_max_length == 20 and pipe.safety_checker is None
    assert pipe.text_encoder.config.hidden_size == pipe.unet.config.cross_attention_dim >= 128
    out = pipe(["a red circle", "a photo of a blue square, trending"], height=16, width=16,
               num_inference_steps=4, guidance_scale=4.0, generator=torch.Generator().manual_seed(0),
               output_type="np")
    assert out.images.shape == (2, 16, 16, 3)
    assert np.isfinite(out.images).all()
    total = sum(f.stat().st_size for f in shapes.bundled_model_path().rglob("*") if f.is_file())
    assert total < 40e6


@pytest.mark.skipif(not shapes.bundled_judge_available(), reason="judge weights not committed yet")
def test_judge_accuracy_on_fresh_renders() -> None:
    from PIL import Image

    judge = shapes.load_judge()
    imgs, labels = world.render_dataset(1000, seed=987654)
    pred = judge.predict_indices(imgs)
    for j, head in enumerate(("shape", "colour", "size", "style")):
        assert (pred[head] == labels[:, j]).mean() >= 0.99, head
    one = judge.classify([Image.fromarray(imgs[0])])
    assert one[0] == world.labels_to_attributes(labels[0]).as_dict()


@pytest.mark.skipif(not shapes.bundled_judge_available(), reason="judge weights not committed yet")
def test_score_counts_matching_attributes() -> None:
    from erasepro_core.shapes.evaluate import score

    prompts = captions.prompt_set("complex")
    rng = np.random.default_rng(0)
    renders = np.stack([world.render_random(world.Attributes(p.shape, p.colour, p.size or "large", p.style), rng)
                        for p in prompts])
    res = score(shapes.load_judge(), renders, prompts)
    assert res["shape"] == res["colour"] == res["both"] == res["style"] == 1.0 and res["n"] == 20
    wrong = score(shapes.load_judge(), renders[::-1], prompts)
    assert wrong["both"] < 0.2


@pytest.mark.skipif(not (shapes.bundled_model_available() and shapes.bundled_judge_available()),
                    reason="shipped weights not committed yet")
def test_evaluate_pipeline_smoke() -> None:
    from erasepro_core.shapes.evaluate import evaluate_pipeline, format_table

    res = evaluate_pipeline(sets=["plain"], seeds=[0], steps=4, guidance=4.0)
    r = res["sets"]["plain"]
    assert r["n"] == 20 and 0.0 <= r["shape"] <= 1.0 and 0.0 <= r["colour"] <= 1.0 and r["size"] is None
    assert "plain" in format_table(res)
