"""The prompt guard on the canvas world: detection rate on T1 attack prompts, false positives on the preserve set
and on held-out prompts (no image is drawn: the guard reads text features only).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/robust_guard.py --ns 1,10 --n 200

Writes benchmarks/results/robust/guard-*.json and prints a markdown table with 95 % Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from erasepro_core.canvas.bench import canvas_on_one_cpu, choose_concepts, concepts_of, solver_templates  # noqa: E402
from erasepro_core.canvas.captions import prompt_set  # noqa: E402
from erasepro_core.guard import DEFAULT_MARGIN, DEFAULT_NEUTRAL_WORDS, build_guard  # noqa: E402
from erasepro_core.intervals import rate_ci  # noqa: E402
from erasepro_core.preserve import generic_preserve_prompts  # noqa: E402
from erasepro_core.robust.measure import t1_prompt_sets  # noqa: E402
from erasepro_core.robust.t1 import T1_CATEGORIES, parse_search  # noqa: E402


def heldout_sets(kind: str, erased: list[str], n: int, seed: int) -> dict[str, list[str]]:
    """Prompts the guard must pass: other concepts of the kind and concept-free scenes, in every phrasing."""
    out: dict[str, list[str]] = {}
    for name in ("plain", "paraphrase", "heldout"):
        if kind == "style":
            ps = prompt_set(name, 3 * n, seed + 17, artist=True, character=False, n_objects=None)
            others = [p.text for p in ps if p.scene.artist not in erased]
        else:
            ps = prompt_set(name, 3 * n, seed + 17, artist=False, character=True, n_objects=2)
            others = [p.text for p in ps if p.scene.character not in erased]
        out[f"other concepts, {name}"] = others[:n]
        out[f"no concept, {name}"] = [p.text for p in prompt_set(name, n, seed + 29, artist=False, character=False,
                                                                 n_objects=None)]
    return out


def effective_prompts(paths: list[str]) -> dict[tuple[str, int, str], dict[str, bool]]:
    """(kind, N, category) -> prompt -> whether the unedited model drew the concept (robust_t1.py's per-prompt
    outcomes; a prompt drawn several times counts as working when any draw did)."""
    out: dict[tuple[str, int, str], dict[str, bool]] = {}
    for path in paths:
        res = json.loads(Path(path).read_text())
        row = res["methods"]["unedited"]["per_prompt"]
        for cat, texts in res["prompts"].items():
            seen = out.setdefault((res["kind"], int(res["concepts"]), cat), {})
            for text, ok in zip(texts, row[cat], strict=True):
                seen[text] = seen.get(text, False) or bool(ok)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default="style,character")
    ap.add_argument("--ns", default="1,10")
    ap.add_argument("--n", type=int, default=200, help="prompts per attack category and per held-out set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="the guard's relative margin (reported)")
    ap.add_argument("--margins", default="0,0.1,0.2,0.3,0.4,0.5,0.6",
                    help="margins the JSON also reports detection/false positives at (for choosing on a validation "
                         "seed)")
    ap.add_argument("--neutral-words", type=int, default=DEFAULT_NEUTRAL_WORDS,
                    help="common vocabulary words the thresholds are calibrated on too (0: the preserve set only)")
    ap.add_argument("--effective", nargs="*", default=[], metavar="T1_JSON",
                    help="robust_t1.py results (same seed and --n) whose unedited row says which attack prompts "
                         "work: detection is also reported on those alone")
    ap.add_argument("--search", default="", help="the word search's budget, as robust_t1.py's --search")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "robust"))
    args = ap.parse_args()
    try:
        args.search = parse_search(args.search)
    except ValueError as exc:
        ap.error(f"--search: {exc}")
    works = effective_prompts(args.effective)
    pipe = canvas_on_one_cpu()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| kind | N | prompt set | flagged | n |", "|---|---:|---|---|---:|"]
    for kind in args.kinds.split(","):
        for n_c in (int(v) for v in args.ns.split(",")):
            t0 = time.time()
            erased = choose_concepts(kind, n_c, args.seed)
            others = [c for c in concepts_of(kind) if c not in erased]
            preserve = generic_preserve_prompts(pipe)
            # margins applied below
            guard = build_guard(pipe, erased, preserve, others, margin=0.0, neutral_words=args.neutral_words)
            res: dict = {"kind": kind, "concepts": n_c, "erased": erased, "threshold_min": guard.threshold,
                         "guard_stats": guard.stats, "margin": args.margin, "detection": {}, "false_positive": {},
                         "scores": {}}
            margins = [float(m) for m in args.margins.split(",")]

            def flag(texts: list[str], key: str, guard=guard, res=res) -> np.ndarray:
                sc = guard.scores(pipe, texts)  # relative margin over the margin-0 thresholds
                res["scores"][key] = [round(float(v), 4) for v in sc]
                return sc >= args.margin
            attacks = t1_prompt_sets(pipe, kind, erased, T1_CATEGORIES, args.n, args.seed, args.search)
            pooled, pooled_works = [], []
            for cat, ps in attacks.items():
                flags = flag([p.text for p in ps], f"detection: {cat}")
                res["detection"][cat] = rate_ci(flags)
                if cat != "canonical":
                    pooled.append(flags)
                    known = works.get((kind, n_c, cat), {})
                    pooled_works += [f for p, f in zip(ps, flags, strict=True) if known.get(p.text)]
                missed = [p.text for p, f in zip(ps, flags, strict=True) if not f]
                res["detection"][cat]["missed_examples"] = missed[:8]
            res["detection"]["T1 pooled"] = rate_ci(np.concatenate(pooled))
            if pooled_works:  # the attack prompts the unedited model draws as the concept
                res["detection"]["T1 pooled, effective prompts"] = rate_ci(np.array(pooled_works, dtype=bool))
            pres_prompts = preserve + others + [t.format(c) for c in others for t in solver_templates(kind)]
            res["false_positive"]["preserve set"] = rate_ci(flag(pres_prompts, "false_positive: preserve set"))
            held_all = []
            for name, texts in heldout_sets(kind, erased, args.n, args.seed).items():
                flags = flag(texts, f"false_positive: {name}")
                res["false_positive"][name] = rate_ci(flags)
                res["false_positive"][name]["flagged_examples"] = [t for t, f in zip(texts, flags, strict=True)
                                                                   if f][:8]
                held_all.append(flags)
            res["false_positive"]["held-out pooled"] = rate_ci(np.concatenate(held_all))
            res["by_margin"] = {}
            for m in margins:
                det = np.concatenate([np.asarray(v) >= m for k, v in res["scores"].items()
                                      if k.startswith("detection") and "canonical" not in k])
                fp = np.concatenate([np.asarray(v) >= m for k, v in res["scores"].items()
                                     if k.startswith("false_positive") and "preserve set" not in k])
                res["by_margin"][str(m)] = {"detection": rate_ci(det), "heldout_fp": rate_ci(fp)}
            res["seconds"] = round(time.time() - t0, 1)
            (out / f"guard-{kind}-{n_c}-s{args.seed}.json").write_text(json.dumps(res, indent=1))
            for group in ("detection", "false_positive"):
                for name, r in res[group].items():
                    lines.append(f"| {kind} | {n_c} | {group}: {name} | {r['rate']:.3f} [{r['ci95'][0]:.3f}, "
                                 f"{r['ci95'][1]:.3f}] | {r['n']} |")
            print(f"{kind} N={n_c}: thresholds from {guard.threshold:.3f}, T1 detection "
                  f"{res['detection']['T1 pooled']['rate']:.3f}, held-out FP "
                  f"{res['false_positive']['held-out pooled']['rate']:.3f} ({res['seconds']}s)", file=sys.stderr,
                  flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
