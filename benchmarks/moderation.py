"""Moderation presets on a real model: erase a preset, draw its evaluation prompts before and after, judge them.

    python benchmarks/moderation.py --model /models/sd-v1-5 --preset nudity --samples 4 --json nudity.json
    python benchmarks/moderation.py --model /models/sd-v1-5 --preset artists --name "van gogh" --name monet \\
        --clip-model /models/clip-vit-large-patch14 --json artists.json
    python benchmarks/moderation.py --smoke          # tiny random pipeline, 2 prompts, 2 steps (wiring only)

The judge is the preset's (nudity: NudeNet's detector; artists, characters, brands: zero-shot CLIP from the
folder given by --clip-model or ERASEPRO_CLIP_MODEL) unless --judge names another. The output says which judge,
with which settings and sample size, and the flagged rate on each side with its 95 % Wilson interval; nothing is
downloaded. Numbers from the tiny pipeline (--smoke) mean nothing: it draws noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from erasepro_core import erase, load_pipeline
from erasepro_core.judges import judge_for, load_judge
from erasepro_core.judges.evaluate import MAX_PROMPTS, eval_items, judge_erasure
from erasepro_core.presets import PRESETS, apply_preset
from erasepro_core.spec import ErasureSpec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a diffusers folder (or 'bundled')")
    p.add_argument("--preset", default="nudity", choices=sorted(PRESETS))
    p.add_argument("--name", action="append", help="a name for artists/characters/brands (repeatable)")
    p.add_argument("--judge", help="nudenet or clip (default: the preset's)")
    p.add_argument("--clip-model", help="a local CLIP folder (default: ERASEPRO_CLIP_MODEL)")
    p.add_argument("--samples", type=int, default=4, help="images per prompt and side")
    p.add_argument("--max-prompts", type=int, default=MAX_PROMPTS)
    p.add_argument("--steps", type=int, help="sampling steps (default: the model family's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a tiny random pipeline, 2 prompts, 2 steps")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.smoke:
        from erasepro_core.tiny import tiny_sd_pipeline

        pipe, model = tiny_sd_pipeline(seed=0), "tiny (random weights)"
        args.samples, args.max_prompts, args.steps = 1, 2, 2
    elif args.model:
        pipe, model = load_pipeline(args.model), args.model
    else:
        p.error("give --model (a diffusers folder) or --smoke")
    pipe.set_progress_bar_config(disable=True)
    params = {"names": args.name} if args.name else {}
    spec = ErasureSpec.model_validate(apply_preset({}, args.preset, params))
    t0 = time.perf_counter()
    result = erase(pipe, spec)
    erase_s = time.perf_counter() - t0
    judge_name = args.judge or judge_for(model, args.preset)
    judge = load_judge(judge_name, **({"clip_model": args.clip_model} if judge_name == "clip" else {}))
    items = eval_items(spec.model_dump(mode="json"))[:args.max_prompts]
    t0 = time.perf_counter()
    report, _ = judge_erasure(pipe, result.delta, items, judge, samples=args.samples, seed=args.seed,
                              steps=args.steps)
    out = {"model": model, "preset": spec.preset.model_dump(), "erase_seconds": round(erase_s, 2),
           "judge_seconds": round(time.perf_counter() - t0, 2), **{k: v for k, v in report.items()
                                                                  if k != "per_prompt"},
           "per_prompt": [{k: row[k] for k in ("prompt", "target", "anchor")} |
                          {s: {k: row[s][k] for k in ("rate", "flagged", "n")} for s in ("before", "after")}
                          for row in report["per_prompt"]]}
    b, a = report["before"], report["after"]
    print(f"{args.preset} v{spec.preset.version} on {model}: judge {report['judge']['name']}, "
          f"{report['prompts']} prompts x {report['samples_per_prompt']} images = {report['images_per_side']} per side")
    print(f"  flagged before {b['rate']:.3f} [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]  "
          f"after {a['rate']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
