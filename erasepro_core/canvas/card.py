"""The canvas model's card (``README.md`` in the Hugging Face layout), written from the training run's records
and a judged evaluation, so the shipped card states what was measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from erasepro_core.canvas.evaluate import table

DEFAULT_COMMANDS = """erasepro canvas train --out runs/canvas --resume
erasepro canvas export --out runs/canvas --dest erasepro_core/canvas/model
erasepro canvas train-judge --out erasepro_core/canvas/judge"""


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def stage_seconds(run_dir: str | Path) -> dict[str, float]:
    """Wall time per stage from a run's records: ``data_done.json``, ``clip_done.json``, ``vae_done.json`` and the
    UNet log, whose ``elapsed`` restarts at each resumed part (the parts are summed)."""
    run_dir = Path(run_dir)
    out = {stage: json.loads((run_dir / f"{stage}_done.json").read_text())["seconds"]
           for stage in ("data", "clip", "vae") if (run_dir / f"{stage}_done.json").exists()}
    elapsed = [json.loads(line).get("elapsed") for line in (run_dir / "unet_log.jsonl").read_text().splitlines()]
    elapsed = [e for e in elapsed if e is not None]
    out["unet"] = sum(a for a, b in zip(elapsed, [*elapsed[1:], 0.0], strict=True) if b < a)
    return out


def write_card(model_dir: str | Path, run_dir: str | Path, rows: list[dict[str, Any]], *,
               eval_args: dict[str, Any], seconds: dict[str, float] | None = None, status: str = "",
               commands: str = "", machine: str = "a quiet 2-core CPU") -> Path:
    """Write ``model_dir/README.md``; ``rows`` = ``evaluate_pipeline`` rows, ``seconds`` = wall time per stage
    (default :func:`stage_seconds` of the run), ``status`` = a markdown section placed before the limitations (how
    the model stands against its bar), ``commands`` = the shell lines that made it (default: one resumable run,
    an export and the judge), ``machine`` = what the times were measured on."""
    model_dir, run_dir = Path(model_dir), Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    clip = json.loads((run_dir / "clip_done.json").read_text())
    vae = json.loads((run_dir / "vae_done.json").read_text())
    seconds = seconds if seconds is not None else stage_seconds(run_dir)
    log = [json.loads(line) for line in (run_dir / "unet_log.jsonl").read_text().splitlines()]
    gaps = [r for r in log if "gap" in r]
    pick = [r for r in gaps if r["step"] in {250, 500, 1000} or r["step"] % 2000 == 0 or r is gaps[-1]]
    gap_rows = "\n".join(f"| {r['step']:,} | {r['loss_right']:.3f} | {r['loss_shuffled']:.3f} | "
                         f"{r['loss_empty']:.3f} | {r['gap']:.3f} |" for r in pick)
    parts = {sub: _size_mb(model_dir / sub) for sub in ("text_encoder", "unet", "vae", "tokenizer")}
    plain = [r for r in rows if r["set"] == "plain"]
    total = sum(seconds.values())
    w, ch = cfg["text_hidden"], tuple(cfg["unet_channels"])
    arch = "\n".join([
        f"| tokenizer | real CLIP BPE vocabulary (49,408), `model_max_length={cfg['max_length']}`, EOS padding |",
        f"| text encoder | `CLIPTextModel`, hidden {w} (the context width), {cfg['text_layers']} layers, "
        f"{cfg['text_heads']} heads, MLP {4 * w}, quick-GELU |",
        f"| UNet | `UNet2DConditionModel` on 16x16x4 latents, blocks {ch}, cross-attention at 8x8, 4x4 and the mid "
        f"block, `cross_attention_dim={w}` |",
        "| VAE | `AutoencoderKL` (32, 64), 32x32x3 -> 16x16x4, latent mean/std folded into the quant convs, "
        "`scaling_factor=1` |",
        "| scheduler | `DDIMScheduler`, linear betas 1e-4 ... 0.02, 1,000 steps, eps-prediction |",
    ])
    ho = clip["heldout"]
    recipe = "\n".join([
        f"1. **Data**: {cfg['n_images']:,} scenes (`render_dataset({cfg['n_images']}, seed={cfg['seed']})`), "
        f"{cfg['captions_per_image']} training captions each (training phrasings only; held-out phrasings and probe "
        "words never appear).",
        f"2. **Text encoder, contrastive** ({cfg['clip_steps']} steps, batch {cfg['clip_batch']} plus one "
        "hard-negative caption per image -- an object's colour or kind, the artist or the character changed, "
        f"{cfg.get('clip_stroke_negatives', 0.0):.0%} of the artist swaps to an artist that differs only in stroke; "
        f"AdamW {cfg['clip_lr']}, cosine): on 256 fresh scenes with held-out phrasings, the image is retrieved from "
        f"its caption among 256 with top-1 {ho['i2t_top1']:.3f}, and its caption beats the hard negative "
        f"{ho['beats_hard_negative']:.3f}. Then frozen; the image tower is discarded." + _factors(clip),
        f"3. **VAE** ({cfg['vae_steps']} steps, batch {cfg['vae_batch']}, MSE + 0.1 L1 + 1e-6 KL): reconstruction "
        f"MSE {vae['recon_mse']:.4f} (images in [-1, 1]).",
        f"4. **UNet** ({cfg['unet_steps']:,} steps, batch {cfg['batch']}): eps-prediction, min-SNR-{cfg['min_snr']:g} "
        f"weighting, {cfg['p_empty']:.0%} empty captions, AdamW {cfg['lr']} (x{cfg['cross_attn_lr_mult']:g} on "
        f"cross-attention), warm-up {cfg['warmup']} steps, linear cool-down over the last 20 %, EMA {cfg['ema']} "
        "(the EMA weights ship).",
    ])
    mins = {k: f"{seconds.get(k, 0) / 60:.0f}" for k in ("data", "clip", "vae", "unet")}
    sizes = (f"{_size_mb(model_dir):.1f} MB (text encoder {parts['text_encoder']:.1f} MB, of which 12.6 MB is the "
             f"49,408 x 128 CLIP token-embedding table; tokenizer {parts['tokenizer']:.1f} MB; UNet "
             f"{parts['unet']:.1f} MB; VAE {parts['vae']:.1f} MB)")
    ev = f"--n {eval_args.get('n')} --steps {eval_args.get('steps')} --guidance {eval_args.get('guidance')}"
    text = f"""---
library_name: diffusers
pipeline_tag: text-to-image
tags: [stable-diffusion, toy, erasepro, canvas-world]
---

# ErasePro canvas-world model (32x32 text-to-image)

A small text-to-image model trained from scratch on the procedural *canvas world* (`erasepro_core/canvas/`,
docs/canvas.md): scenes of 1-3 coloured objects from 12 kinds and 8 colours, in one of 64 named styles
("artists") or the default look, with 20 named characters. A standard diffusers `StableDiffusionPipeline`
(real CLIP tokenizer, `CLIPTextModel`, `UNet2DConditionModel`, `AutoencoderKL`, `DDIMScheduler`), so every code
path ErasePro runs on SD-1.x runs unchanged on it. Its text encoder was trained **contrastively** against an
image encoder (CLIP's objective), not as a classifier. It is the model of the mass-erasure benchmark.

```python
from erasepro_core import load_pipeline

pipe = load_pipeline("canvas", device="cpu", dtype="float32")
image = pipe("a red star and a cyan moon by velmora quistenhoff", height=32, width=32,
             num_inference_steps=20, guidance_scale=5.0).images[0]
```

Weights are float16 safetensors (configs ask loaders for float32). Size on disk: {sizes}.

## Architecture

| part | configuration |
|---|---|
{arch}

## Training recipe (seed {cfg['seed']})

```
{commands or DEFAULT_COMMANDS}
```

{recipe}

Wall time on {machine}: data {mins['data']} min, CLIP
{mins['clip']} min, VAE {mins['vae']} min, UNet {mins['unet']} min: **{total / 60:.0f} minutes** in all.

### Health signal: held-out loss with the right vs another scene's caption

| step | loss right | loss shuffled | loss empty | gap |
|---:|---:|---:|---:|---:|
{gap_rows}

## Accuracy (judged)

`erasepro canvas eval {ev}`: per prompt set
(`plain` canonical words, `paraphrase` training phrasings with synonyms, `heldout` phrasings never trained) and
scene kind, {eval_args.get('n')} prompts each, judged by the shipped judge. *present*: every named object drawn;
*colour*: every drawn named object in its colour; *objects*: both; *background/stroke/texture*: the style's
factors; *style*: the artist (or the default look) recognised; *character*: the named character, or none when
none is named; *all*: objects, style and character right.

{table(rows)}

Plain prompts drawn right (objects and style), all scene kinds together: {_all_rate(plain):.3f}.

{status}## Limitations

- 32x32 pixels; layout follows caption order on fixed slots; no notion of size or position in captions.
- Words never seen in training (`probe_words()`) have untrained embeddings; filler words were trained to draw
  nothing, probe words were not.
- Styles are combinations of three factors, so erasing one artist can pull on others that share a factor:
  that is part of what the benchmark measures.
"""
    (model_dir / "README.md").write_text(text, encoding="utf-8")
    return model_dir / "README.md"


def _factors(clip: dict[str, Any]) -> str:
    f = clip.get("style_factors")
    if not f:
        return ""
    pairs = f.get("stroke_vs_fill", {})
    return (" Style factors in the text tower (the 64 artist names, leave-one-out nearest centroid; majority "
            "share in brackets): " + ", ".join(f"{k} {v['nearest_centroid']:.2f} ({v['majority']:.2f})"
                                                for k, v in f.items() if k != "stroke_vs_fill") + "."
            + ("" if not pairs else " A shared linear direction tells a stroke from the sharp fill (leave-one-artist-"
               "out, chance 0.50): " + ", ".join(f"{k} {v:.2f}" for k, v in pairs.items()) + "."))


def _all_rate(rows: list[dict[str, Any]]) -> float:
    n = sum(r["n"] for r in rows)
    return sum(r["all"] * r["n"] for r in rows) / n if n else float("nan")
