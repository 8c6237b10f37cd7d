"""Erasure quality on the shapes world: does the edited model stop drawing the target, keep drawing
everything else, and resist rephrased and complex prompts?

    .venv/bin/python benchmarks/erasure_quality.py                      # full tables (~15 min on 2 cores)
    .venv/bin/python benchmarks/erasure_quality.py --smoke              # a few prompts and steps (CI)
    .venv/bin/python benchmarks/erasure_quality.py --prompts extra.csv --json out.json

For every case (circle→square, circle→"", red→blue, several at once, outlined→filled) and method (UCE,
ErasePro ``none``, ErasePro progressive with each schedule and layer choice, ablations), images are
generated on fixed seeds for four prompt sets (plain, complex, paraphrase, held-out phrasings) plus any
``--prompts`` CSV (columns ``prompt,shape,colour,set``), and judged by the shipped CNN:

* efficacy — fraction of target prompts still judged as the target (lower is better; chance is 1/4 for a
  shape, 1/5 for a colour, 1/2 for a style); ``literal`` counts only prompts containing the target word;
* anchor — fraction judged as the anchor (non-empty anchors);
* specificity — judge accuracy (shape and colour) on non-target prompts, and its change against the
  unedited model; drift — mean absolute pixel change on those prompts at the same seed (0..1);
* the solver report: K/V residual, held-out leak, update norms by depth.

The solver uses the shapes world's generic templates (``SOLVER_TEMPLATES``, e.g. "a photo of a {}"); the
evaluation prompts never coincide with them or with the model's preserve set (checked at start).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from erasepro_core.delta import applied_delta
from erasepro_core.erasure import erase
from erasepro_core.judges.base import wilson
from erasepro_core.methods.uce_tuning import PROTOCOLS, SWEEP, UCE_ROWS, tune_uce
from erasepro_core.pipeline import load_pipeline, quiet_libraries
from erasepro_core.prompt_files import PRESERVE_FILE, read_prompt_file
from erasepro_core.shapes import (
    COLOURS,
    PROMPT_SETS,
    SHAPES,
    SOLVER_TEMPLATES,
    STYLES,
    Prompt,
    bundled_model_path,
    load_judge,
    prompt_set,
)
from erasepro_core.shapes.evaluate import sample_array
from erasepro_core.spec import ErasureSpec

CASES: dict[str, list[tuple[str, str]]] = {
    "circle->square": [("circle", "square")],
    "circle->''": [("circle", "")],
    "red->blue": [("red", "blue")],
    "multi(circle->square, red->blue, triangle->cross)": [("circle", "square"), ("red", "blue"),
                                                          ("triangle", "cross")],
    "outlined->filled": [("outlined", "filled")],
}
# name -> ErasureSpec overrides
METHODS: dict[str, dict[str, Any]] = {
    # UCE's three rows (erasepro_core.methods.uce_tuning): named preserve concepts = the model's preserve prompts
    # (the same prompts ErasePro's generic set holds); templates only as the protocol says (the bare concept).
    **{k: {**v, "preserve": "model"} for k, v in UCE_ROWS.items()},
    "UCE tuned": {"method": "uce", "preserve": "model", "tune": True},
    # Before issue 28 the UCE row got ErasePro's inputs: the solver templates on everything + the generic set.
    "uce custom (former inputs)": {"method": "uce", "uce_protocol": "custom"},
    "erasepro default (none, tokens=last)": {},
    "erasepro uniform, all layers": {"schedule": "uniform", "layers": "all"},
    "erasepro front, all layers": {"schedule": "front", "layers": "all"},
    "erasepro front, first layer": {"schedule": "front", "layers": [0]},
    "erasepro front, last layer": {"schedule": "front", "layers": [-1]},
    "erasepro none, tokens=to_eos": {"schedule": "none", "token_policy": "to_eos"},
    "erasepro none, preserve all tokens": {"schedule": "none", "preserve_tokens": "all"},
    "erasepro none, no preserve": {"schedule": "none", "default_preserve": False},
    "erasepro front, all, no preserve": {"schedule": "front", "layers": "all", "default_preserve": False},
    "erasepro none, +suffix templates": {"schedule": "none", "templates": "suffix"},
}
SMOKE_METHODS = ("UCE 2025 defaults", "erasepro front, all layers")
VALIDATION_SETS = ("complex", "paraphrase")  # the tuned-UCE sweep scores these, drawn with another seed
# Generic prompt suffixes (the commonest in real SD prompts), appended to the solver's templates.
SUFFIX_TEMPLATES = ("a {}, high quality", "a photo of a {}, detailed", "a {}, 4k, trending")


def kind_of(word: str) -> str:
    for kind, values in (("shape", SHAPES), ("colour", COLOURS), ("style", STYLES)):
        if word in values:
            return kind
    raise ValueError(f"{word!r} is not a shape, colour or style of the shapes world")


@dataclass
class EvalSet:
    name: str
    prompts: list[Prompt]


def read_csv_prompts(path: Path) -> list[EvalSet]:
    """Extra prompt sets from a CSV with columns prompt,shape,colour,set (style optional, default filled)."""
    sets: dict[str, list[Prompt]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"prompt", "shape", "colour", "set"} - set(reader.fieldnames or [])
        if missing:
            raise SystemExit(f"{path}: missing column(s) {sorted(missing)}")
        for i, row in enumerate(reader, start=2):
            if row["shape"] not in SHAPES or row["colour"] not in COLOURS:
                raise SystemExit(f"{path}:{i}: shape must be one of {SHAPES}, colour one of {COLOURS}")
            style = row.get("style") or "filled"
            sets.setdefault(row["set"], []).append(
                Prompt(row["prompt"], row["shape"], row["colour"], None, style, row["set"]))
    return [EvalSet(k, v) for k, v in sets.items()]


def matches(p: Prompt, kind: str, value: str) -> bool:
    return getattr(p, kind) == value


def evaluate(pipe: Any, judge: Any, sets: list[EvalSet], seeds: list[int], steps: int, guidance: float
             ) -> dict[str, dict[str, Any]]:
    """Images and judgements per set: {set: {"images": (n_seeds*n, 16, 16, 3), "pred": [...]}}."""
    out = {}
    for s in sets:
        texts = [p.text for p in s.prompts]
        imgs = np.concatenate([sample_array(pipe, texts, seed, steps=steps, guidance=guidance) for seed in seeds])
        out[s.name] = {"images": imgs, "pred": judge.classify(imgs), "prompts": s.prompts * len(seeds)}
    return out


def _accuracy(pred: list[dict[str, str]], prompts: list[Prompt], idx: list[int]) -> float | None:
    """Fraction of images at ``idx`` judged with the prompt's shape and colour."""
    if not idx:
        return None
    return float(np.mean([pred[i]["shape"] == prompts[i].shape and pred[i]["colour"] == prompts[i].colour
                          for i in idx]))


def case_metrics(edits: list[tuple[str, str]], res: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Per prompt set: efficacy, anchor, specificity and its change, drift; plus ``pooled``, the counts over
    every set (``efficacy``: target-prompt images still judged as their target, over all targets;
    ``specificity``: the other images judged right) with 95 % Wilson intervals."""
    out: dict[str, Any] = {"efficacy": {}, "efficacy_literal": {}, "anchor": {}, "specificity": {},
                           "specificity_change": {}, "drift": {}}
    eff_k = eff_n = spec_k = spec_n = 0
    for name, r in res.items():
        prompts, pred = r["prompts"], r["pred"]
        eff, lit, anc = [], [], []
        for target, anchor in edits:
            kind = kind_of(target)
            idx = [i for i, p in enumerate(prompts) if matches(p, kind, target)]
            if not idx:
                continue
            hits = [pred[i][kind] == target for i in idx]
            eff_k, eff_n = eff_k + int(sum(hits)), eff_n + len(hits)
            eff.append(np.mean(hits))
            lit_idx = [i for i in idx if target in prompts[i].text.split()]
            if lit_idx:
                lit.append(np.mean([pred[i][kind] == target for i in lit_idx]))
            if anchor:
                anc.append(np.mean([pred[i][kind_of(anchor)] == anchor for i in idx]))
        others = [i for i, p in enumerate(prompts)
                  if not any(matches(p, kind_of(t), t) for t, _ in edits)]
        spec_now = _accuracy(pred, prompts, others)
        if spec_now is not None:
            spec_k, spec_n = spec_k + round(spec_now * len(others)), spec_n + len(others)
        spec_base = _accuracy(base[name]["pred"], prompts, others)
        out["efficacy"][name] = float(np.mean(eff)) if eff else None
        out["efficacy_literal"][name] = float(np.mean(lit)) if lit else None
        out["anchor"][name] = float(np.mean(anc)) if anc else None
        out["specificity"][name] = spec_now
        out["specificity_change"][name] = (spec_now - spec_base) if spec_now is not None else None
        if others:
            diff = np.abs(r["images"][others].astype(np.float32) - base[name]["images"][others].astype(np.float32))
            out["drift"][name] = float(diff.mean() / 255.0)
    out["pooled"] = {key: {"k": k, "n": n, "rate": k / n if n else None, "ci95": list(wilson(k, n)) if n else None}
                     for key, k, n in (("efficacy", eff_k, eff_n), ("specificity", spec_k, spec_n))}
    return out


def fmt_ci(d: dict[str, Any]) -> str:
    """A pooled rate as ``0.05 [0.01, 0.24] (1/20)``."""
    if not d or d.get("rate") is None:
        return "   -  "
    return f"{d['rate']:.2f} [{d['ci95'][0]:.2f}, {d['ci95'][1]:.2f}] ({d['k']}/{d['n']})"


def build_spec(edits: list[tuple[str, str]], overrides: dict[str, Any], n_layers: int,
               model_preserve: list[str] | None = None) -> ErasureSpec:
    o = dict(overrides)
    o.pop("tune", None)
    if o.get("layers") == "all":
        o["layers"] = list(range(n_layers))
    if o.get("preserve") == "model":  # name the model's preserve prompts as the preserve concepts
        o["preserve"] = list(model_preserve or [])
    named_protocol = o.get("method") == "uce" and o.get("uce_protocol", "uce2025") != "custom"
    if not named_protocol:  # UCE's protocols phrase prompts as the authors do; everything else: the solver's
        o["templates"] = list(SOLVER_TEMPLATES) + (list(SUFFIX_TEMPLATES) if o.pop("templates", None) == "suffix"
                                                   else [])
    return ErasureSpec.model_validate({"edits": [{"target": t, "anchor": a} for t, a in edits], **o})


def validation_score(m: dict[str, Any]) -> float:
    """What the tuned-UCE sweep maximises: mean specificity − mean efficacy over the validation sets."""
    eff = [v for v in m["efficacy"].values() if v is not None]
    spec = [v for v in m["specificity"].values() if v is not None]
    return float(np.mean(spec) - np.mean(eff))


def fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "   -  "
    return f"{v:+.2f}" if pct else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(bundled_model_path()), help="shapes-world pipeline folder")
    ap.add_argument("--judge", default=None, help="judge folder (default: the shipped one)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--per-combo", type=int, default=2, help="prompts per shape×colour pair and set")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--cases", nargs="+", default=None, help=f"subset of {list(CASES)}")
    ap.add_argument("--methods", nargs="+", default=None, help=f"subset of {list(METHODS)}")
    ap.add_argument("--prompts", type=Path, help="extra prompt sets: CSV with columns prompt,shape,colour,set")
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--smoke", action="store_true", help="tiny run: 1 seed, 1 prompt per pair, 4 steps")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--val-seeds", type=int, nargs="+", default=[7], help="image seeds of the tuning split")
    ap.add_argument("--val-sets", nargs="+", default=list(VALIDATION_SETS), help="prompt sets of the tuning split")
    ap.add_argument("--val-steps", type=int, default=None, help="DDIM steps of the tuning split (default: --steps)")
    ap.add_argument("--tune-protocols", nargs="+", default=list(PROTOCOLS), help="protocols the sweep tries")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    if args.smoke:
        args.seeds, args.per_combo, args.steps = [0], 1, 4
        args.cases = args.cases or ["circle->square"]
        args.methods = args.methods or list(SMOKE_METHODS)
    cases = {k: CASES[k] for k in (args.cases or CASES)}
    methods = {k: METHODS[k] for k in (args.methods or METHODS)}

    extra_sets = read_csv_prompts(args.prompts) if args.prompts else []
    pipe = load_pipeline(args.model, device="cpu", dtype="float32")
    judge = load_judge(args.judge)
    n_layers = int(pipe.text_encoder.config.num_hidden_layers)
    sets = [EvalSet(n, prompt_set(n, seed=0, per_combo=args.per_combo)) for n in PROMPT_SETS]
    sets += extra_sets
    # Evaluation prompts must be disjoint from the solve's prompts and the preserve set.
    pres_file = Path(args.model) / PRESERVE_FILE
    excluded = {t.format(w) for t in SOLVER_TEMPLATES for w in [*SHAPES, *COLOURS, *STYLES]}
    if pres_file.is_file():
        excluded |= set(read_prompt_file(pres_file))
    for s in sets:
        before = len(s.prompts)
        s.prompts = [p for p in s.prompts if p.text not in excluded]
        if len(s.prompts) < before:
            print(f"note: dropped {before - len(s.prompts)} '{s.name}' prompt(s) that the solver or preserve set uses")
    empty = [s.name for s in sets if not s.prompts]
    if empty:
        print(f"note: skipped prompt set(s) {empty}: every prompt coincides with a solver or preserve prompt")
        sets = [s for s in sets if s.prompts]
    if not sets:
        raise SystemExit("no prompt set left to evaluate")
    # The tuned-UCE sweep's validation split: other draws of the prompt grammar (prompt seed 1), minus every test,
    # solver or preserve prompt, at other image seeds.
    test_texts = {p.text for s in sets for p in s.prompts}
    val_sets = [EvalSet(n, [p for p in prompt_set(n, seed=1, per_combo=1) if p.text not in test_texts | excluded])
                for n in args.val_sets]
    val_steps = args.val_steps or args.steps
    model_preserve = read_prompt_file(pres_file) if pres_file.is_file() else []
    print(f"model {args.model}; {n_layers} text-encoder layers; seeds {args.seeds}; {args.steps} DDIM steps, "
          f"guidance {args.guidance}; sets " + ", ".join(f"{s.name}({len(s.prompts)})" for s in sets), flush=True)

    t0 = time.perf_counter()
    base = evaluate(pipe, judge, sets, args.seeds, args.steps, args.guidance)
    print(f"unedited model evaluated in {time.perf_counter() - t0:.0f}s", flush=True)
    results: dict[str, Any] = {"config": {"model": args.model, "seeds": args.seeds, "steps": args.steps,
                                          "guidance": args.guidance, "per_combo": args.per_combo,
                                          "sets": {s.name: len(s.prompts) for s in sets},
                                          "uce_sweep": {k: list(v) for k, v in SWEEP.items()},
                                          "validation": {"sets": {s.name: len(s.prompts) for s in val_sets},
                                                         "seeds": args.val_seeds, "steps": val_steps,
                                                         "protocols": args.tune_protocols}},
                               "cases": {}}
    for case, edits in cases.items():
        base_m = case_metrics(edits, base, base)
        results["cases"][case] = {"unedited": base_m}
        print(f"\n## {case}\n")
        names = [s.name for s in sets]
        print("| method | " + " | ".join(f"eff {n}" for n in names) + " | eff pooled [95 %] (k/n) | anchor (plain) | "
              "spec (all) | spec pooled [95 %] (k/n) | Δspec | drift | K/V res | held-out | ‖Δ‖/‖W‖ by depth | "
              "K/V ‖Δ‖/‖W‖ |")
        print("|---|" + "---:|" * (len(names) + 10))

        def row(label: str, m: dict[str, Any], rep: dict[str, Any] | None, names: list[str] = names) -> None:
            spec_all = [v for v in m["specificity"].values() if v is not None]
            dspec = [v for v in m["specificity_change"].values() if v is not None]
            drift = [v for v in m["drift"].values() if v is not None]
            s = rep["summary"] if rep else {}
            print(f"| {label} | " + " | ".join(fmt(m["efficacy"][n]) for n in names)
                  + f" | {fmt_ci(m['pooled']['efficacy'])}"
                  + f" | {fmt(m['anchor'].get('plain'))} | {fmt(float(np.mean(spec_all)) if spec_all else None)}"
                  f" | {fmt_ci(m['pooled']['specificity'])}"
                  f" | {fmt(float(np.mean(dspec)) if dspec else None, pct=True)}"
                  f" | {np.mean(drift) if drift else 0:.3f}"
                  f" | {s.get('kv_residual', 0) or 0:.1e} | {fmt(s.get('kv_heldout_residual'))}"
                  f" | {', '.join(f'{v:.2f}' for v in s.get('progressive_update_norms', [])) or '-'}"
                  f" | {fmt(s.get('kv_update_norm'))} |", flush=True)

        row("unedited", base_m, None)
        val_base = None
        for label, overrides in methods.items():
            tuned = None
            if overrides.get("tune"):
                if val_base is None:
                    val_base = evaluate(pipe, judge, val_sets, args.val_seeds, val_steps, args.guidance)

                def validate(spec: ErasureSpec, edits: list[tuple[str, str]] = edits,
                             base: dict[str, Any] = val_base) -> float:
                    with applied_delta(pipe, erase(pipe, spec).delta):
                        res = evaluate(pipe, judge, val_sets, args.val_seeds, val_steps, args.guidance)
                    return validation_score(case_metrics(edits, res, base))

                def make(settings: dict[str, Any], edits: list[tuple[str, str]] = edits,
                         overrides: dict[str, Any] = overrides) -> ErasureSpec:
                    return build_spec(edits, {**overrides, **settings}, n_layers, model_preserve)

                tuned = tune_uce(make, validate, protocols=tuple(args.tune_protocols),
                                 log=lambda m: print(m, flush=True))
                overrides = {**overrides, **tuned.settings}
            spec = build_spec(edits, overrides, n_layers, model_preserve)
            t = time.perf_counter()
            result = erase(pipe, spec)
            solve_s = time.perf_counter() - t
            with applied_delta(pipe, result.delta):
                res = evaluate(pipe, judge, sets, args.seeds, args.steps, args.guidance)
            m = case_metrics(edits, res, base)
            m["report"] = {k: result.report[k] for k in ("summary", "layers", "n_constraints", "warnings")}
            m["report"]["sites"] = [{k: v for k, v in s.items()} for s in result.report["sites"]
                                    if s["stage"] == "progressive"]
            m["solve_s"] = solve_s
            if tuned is not None:
                m["tuned"] = {"settings": tuned.settings, "validation_score": tuned.score,
                              "tried": [{"settings": st, "score": sc} for st, sc in tuned.tried]}
                label = tuned.label()
            results["cases"][case][label] = m
            row(label, m, result.report)
            if args.json:  # written as it goes: a long run interrupted keeps what it measured
                args.json.write_text(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
