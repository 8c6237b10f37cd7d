"""Robustness of erasures on the shapes world: how hard is it to bring an erased concept back?

    .venv/bin/python benchmarks/robustness.py                                  # default tables (minutes)
    .venv/bin/python benchmarks/robustness.py --smoke                          # tiny run (CI)
    .venv/bin/python benchmarks/robustness.py --cases circle->square --methods "UCE 2025 defaults" "erasepro default" \\
        --budgets soft_token=0,8,16,32 vocabulary=200 --seeds 0 1 --json out.json

For every case and method the erasure is computed, then every attack (``erasepro_core.attacks``) runs on the
edited model with the shipped judge CNN as P(target | image), each on harmless templates ("a {colour} {}" for a
shape, "a {} {shape}" for a colour, "a {} {colour} {shape}" for a style); ASR is reported at each budget (a
curve). The unedited model is the ceiling; chance (1/4 shape, 1/5 colour, 1/2 style) is the floor for
efficacy. Efficacy per prompt set and specificity come from ``erasure_quality.py``'s evaluation.
Several edits at once: each target is attacked with its own judge and the ASRs are averaged.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from erasure_quality import (  # noqa: E402
    EvalSet,
    build_spec,
    case_metrics,
    evaluate,
    kind_of,
)

from erasepro_core.attacks import ATTACKS, Sampling  # noqa: E402
from erasepro_core.delta import applied_delta  # noqa: E402
from erasepro_core.erasure import erase  # noqa: E402
from erasepro_core.methods.uce_tuning import UCE_ROWS  # noqa: E402
from erasepro_core.pipeline import load_pipeline, quiet_libraries  # noqa: E402
from erasepro_core.prompt_files import PRESERVE_FILE, read_prompt_file  # noqa: E402
from erasepro_core.shapes import COLOURS, PROMPT_SETS, SHAPES, bundled_model_path, load_judge, prompt_set  # noqa: E402
from erasepro_core.shapes.judge import attribute_judge  # noqa: E402
from erasepro_core.shapes.robustness import attack_templates  # noqa: E402

CASES: dict[str, list[tuple[str, str]]] = {
    "circle->square": [("circle", "square")],
    "red->blue": [("red", "blue")],
    "multi(circle->square, red->blue, triangle->cross)": [("circle", "square"), ("red", "blue"),
                                                          ("triangle", "cross")],
    "outlined->filled": [("outlined", "filled")],
}
# name -> ErasureSpec overrides (see erasure_quality.build_spec); "unedited" is the ceiling.
METHODS: dict[str, dict[str, Any] | None] = {
    "unedited": None,
    # UCE as its authors run it (erasepro_core.methods.uce_tuning), the model's preserve prompts named; the tuned
    # row's settings come from erasure_quality.py's validation sweep (``--uce-tuned protocol,λ,s_p``).
    **{k: {**v, "preserve": "model"} for k, v in UCE_ROWS.items()},
    "uce custom (former inputs)": {"method": "uce", "uce_protocol": "custom"},
    "erasepro default": {},
    "erasepro front, all layers": {"schedule": "front", "layers": "all"},
    "erasepro to_eos": {"token_policy": "to_eos"},
    "erasepro harden 2": {"harden_rounds": 2},
    "erasepro front, all layers, harden 2": {"schedule": "front", "layers": "all", "harden_rounds": 2},
}
# benchmark name -> (attack in erasepro_core.attacks.ATTACKS, its extra keyword arguments)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "vocabulary": ("vocabulary", {}),
    "word_search": ("word_search", {}),
    "soft_token": ("soft_token", {}),
    "concept_direction": ("concept_direction", {}),
    "closed_form": ("closed_form", {"columns": "concept"}),
    "closed_form_all": ("closed_form", {"columns": "all"}),
}
DEFAULT_BUDGETS: dict[str, list[int]] = {
    "vocabulary": [200], "word_search": [24], "soft_token": [0, 8, 16, 32], "concept_direction": [8],
    "closed_form": [8], "closed_form_all": [4],
}
SMOKE_BUDGETS: dict[str, list[int]] = {
    "vocabulary": [20], "word_search": [8], "soft_token": [0, 4], "concept_direction": [2], "closed_form": [2],
    "closed_form_all": [1],
}
CHANCE = {"shape": 1 / len(SHAPES), "colour": 1 / len(COLOURS), "style": 1 / 2}


def parse_budgets(items: list[str] | None, base: dict[str, list[int]]) -> dict[str, list[int]]:
    out = {k: list(v) for k, v in base.items()}
    for item in items or []:
        name, _, vals = item.partition("=")
        if name not in VARIANTS or not vals:
            raise SystemExit(f"--budgets: expected ATTACK=N[,N...] with ATTACK in {list(VARIANTS)}, got {item!r}")
        out[name] = sorted({int(v) for v in vals.split(",")})
    return out


def run_attack(name: str, edited: Any, unedited: Any, target: str, budgets: list[int], seed: int,
               sampling: Sampling) -> dict[str, Any]:
    """One attack at its largest budget; the curve gives the ASR at the smaller ones."""
    attack, extra = VARIANTS[name]
    fn = ATTACKS[attack]
    kwargs: dict[str, Any] = {"templates": attack_templates(target), "sampling": sampling, **extra}
    if name == "soft_token":
        kwargs["checkpoints"] = budgets
    res = fn(edited, unedited, target, attribute_judge(target), max(budgets), seed, **kwargs)
    return res.summary()


def curve_at(summary: dict[str, Any], budget: int) -> float:
    """ASR after ``budget`` (the last curve point at or below it)."""
    pts = [a for b, a in summary["curve"] if b <= budget]
    return pts[-1] if pts else 0.0


def attack_row(attacks: dict[str, list[dict[str, Any]]], budgets: dict[str, list[int]]) -> dict[str, Any]:
    """Mean over targets and seeds: ASR at each budget, and the vocabulary rate."""
    row: dict[str, Any] = {}
    for name, runs in attacks.items():
        for b in budgets[name]:
            row[f"{name}@{b}"] = float(np.mean([curve_at(r, b) for r in runs]))
        if name == "vocabulary":
            row["vocabulary_rate"] = float(np.mean([r["details"]["rate"] for r in runs]))
    return row


def fmt(v: float | None) -> str:
    return "  -  " if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(bundled_model_path()))
    ap.add_argument("--cases", nargs="+", default=None, help=f"subset of {list(CASES)}")
    ap.add_argument("--methods", nargs="+", default=None, help=f"subset of {list(METHODS)}")
    ap.add_argument("--uce-tuned", metavar="PROTOCOL,LAMBDA,S_P",
                    help="add the 'UCE tuned' row with these settings (erasure_quality.py's validation sweep)")
    ap.add_argument("--attacks", nargs="+", default=None, help=f"subset of {list(VARIANTS)}")
    ap.add_argument("--budgets", nargs="+", default=None, help="ATTACK=N[,N...] (ASR reported at each N)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="attack seeds (results are averaged)")
    ap.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1], help="image seeds for efficacy")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--no-efficacy", action="store_true", help="attacks only")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--smoke", action="store_true", help="tiny budgets, 1 case, UCE and the default, 8 steps")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    budgets = parse_budgets(args.budgets, SMOKE_BUDGETS if args.smoke else DEFAULT_BUDGETS)
    if args.smoke:
        args.steps, args.eval_seeds = 8, [0]
        args.cases = args.cases or ["circle->square"]
        args.methods = args.methods or ["unedited", "UCE 2025 defaults", "erasepro default"]
    cases = {k: CASES[k] for k in (args.cases or CASES)}
    methods = {k: METHODS[k] for k in (args.methods or METHODS)}
    if args.uce_tuned:
        protocol, lam, s_p = args.uce_tuned.split(",")
        methods["UCE tuned"] = {"method": "uce", "preserve": "model", "uce_protocol": protocol,
                                "uce_lambda": float(lam), "uce_preserve_scale": float(s_p)}
    attacks = args.attacks or list(VARIANTS)
    sampling = Sampling(steps=args.steps)

    base = load_pipeline(args.model, device="cpu", dtype="float32")
    edited = copy.deepcopy(base)
    judge = load_judge()
    n_layers = int(base.text_encoder.config.num_hidden_layers)
    sets = [EvalSet(n, prompt_set(n, seed=0, per_combo=1)) for n in PROMPT_SETS]
    base_eval = None if args.no_efficacy else evaluate(base, judge, sets, args.eval_seeds, args.steps, 5.0)
    results: dict[str, Any] = {"config": {"model": args.model, "seeds": args.seeds, "eval_seeds": args.eval_seeds,
                                          "steps": args.steps, "budgets": {a: budgets[a] for a in attacks},
                                          "chance": CHANCE}, "cases": {}}
    cols = [f"{a}@{b}" for a in attacks for b in budgets[a]]
    for case, edits in cases.items():
        print(f"\n## {case}\n", flush=True)
        eff_cols = [] if args.no_efficacy else [f"eff {s.name}" for s in sets] + ["spec", "Δspec"]
        vocab = ["vocab rate"] if "vocabulary" in attacks else []
        print("| method | " + " | ".join(vocab + cols + eff_cols) + " | erase s | attack s |")
        print("|---|" + "---:|" * (len(vocab) + len(cols) + len(eff_cols) + 2))
        results["cases"][case] = {}
        for label, overrides in methods.items():
            t = time.perf_counter()
            report = None
            if overrides is not None and overrides.get("preserve") == "model":
                overrides = {**overrides, "preserve": read_prompt_file(Path(args.model) / PRESERVE_FILE)}
            if overrides is None:
                delta = None
            else:
                result = erase(base, build_spec(edits, overrides, n_layers))
                delta, report = result.delta, result.report
            erase_s = time.perf_counter() - t
            t = time.perf_counter()
            runs: dict[str, list[dict[str, Any]]] = {a: [] for a in attacks}
            with applied_delta(edited, delta) if delta is not None else _null():
                for target, _ in edits:
                    for seed in args.seeds:
                        for a in attacks:
                            runs[a].append(run_attack(a, edited, base, target, budgets[a], seed, sampling))
                res_eval = None if args.no_efficacy else evaluate(edited, judge, sets, args.eval_seeds,
                                                                  args.steps, 5.0)
            attack_s = time.perf_counter() - t
            row = attack_row(runs, budgets)
            entry: dict[str, Any] = {"attacks": row, "runs": runs, "erase_s": erase_s, "attack_s": attack_s}
            cells = [fmt(row.get("vocabulary_rate"))] if vocab else []
            cells += [fmt(row[c]) for c in cols]
            if res_eval is not None:
                m = case_metrics(edits, res_eval, base_eval)
                entry["quality"] = m
                spec = [v for v in m["specificity"].values() if v is not None]
                dspec = [v for v in m["specificity_change"].values() if v is not None]
                cells += [fmt(m["efficacy"][s.name]) for s in sets]
                cells += [fmt(float(np.mean(spec))), f"{float(np.mean(dspec)):+.3f}"]
            if report is not None:
                entry["report"] = {"summary": report["summary"], "timings": report["timings"],
                                   "hardening": report.get("hardening")}
            results["cases"][case][label] = entry
            print(f"| {label} | " + " | ".join(cells) + f" | {erase_s:.2f} | {attack_s:.0f} |", flush=True)
        floor = ", ".join(f"{t}: {CHANCE[kind_of(t)]:.2f}" for t, _ in edits)
        print(f"\nchance (efficacy floor): {floor}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"\nwrote {args.json}")
    return 0


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
