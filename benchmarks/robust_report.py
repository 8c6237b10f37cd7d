"""Markdown tables of the robustness results under benchmarks/results/robust/ (T1 per category, the guard, T2).

    python benchmarks/robust_report.py                                      # the 6,000-step model's results
    python benchmarks/robust_report.py benchmarks/results/robust_14k        # the shipped model's
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from erasepro_core.intervals import paired_difference  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "robust"
CATS = ("canonical", "paraphrase", "heldout", "misspelling", "other_spelling", "word_search")


def ci(r: dict) -> str:
    return f"{r['rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"


def t1_tables(results: Path = RESULTS) -> str:
    out = []
    for kind, n_c in (("style", 1), ("character", 1), ("style", 10), ("character", 10)):
        rows: dict[str, dict] = {}
        for f in sorted(results.glob(f"t1-{kind}-{n_c}-s0-n40-*.json")):
            rows.update(json.loads(f.read_text())["methods"])
        if not rows:
            continue
        # unedited first, then ErasePro's rows, then UCE's (a stable sort: otherwise in the order the files give them)
        order = sorted(rows, key=lambda m: (m != "unedited", m != "default", m.startswith("uce")))
        rows = {m: rows[m] for m in order}
        base = rows.get("unedited")
        out += [f"#### {kind}, N = {n_c}", "",
                "| method | " + " | ".join(CATS) + " | T1 pooled ↓ | Δ T1 vs unedited | preserved ↑ | objects ↑ |",
                "|---|" + "---|" * (len(CATS) + 4)]
        for name, row in rows.items():
            d = "—"
            if base is not None and name != "unedited":
                pd = paired_difference(row["per_prompt"]["t1_pooled"], base["per_prompt"]["t1_pooled"])
                d = f"{pd['diff']:+.2f} [{pd['ci95'][0]:+.2f}, {pd['ci95'][1]:+.2f}]"
            label = name + (f" (+{len(row.get('targets', [])) - 1} targets)" if row.get("targets") else "")
            out.append(f"| {label} | " + " | ".join(ci(row["categories"][c]) for c in CATS if c in row["categories"])
                       + f" | {ci(row['t1_pooled'])} | {d} | {ci(row['preserved'])} | {ci(row['objects'])} |")
        out.append("")
    return "\n".join(out)


def guard_tables(results: Path = RESULTS) -> str:
    out = ["| kind | N | margin | T1 detection ↑ (pooled) | per category | effective prompts ↑ | held-out FP ↓ "
           "| preserve FP |", "|---|---:|---:|---|---|---|---|---|"]
    for f in sorted(results.glob("guard-*.json")):
        r = json.loads(f.read_text())
        det = r["detection"]
        per = ", ".join(f"{c} {det[c]['rate']:.2f}" for c in CATS if c in det)
        held, pres, t1 = r["false_positive"]["held-out pooled"], r["false_positive"]["preserve set"], det["T1 pooled"]
        eff = det.get("T1 pooled, effective prompts")
        eff_s = f"{ci(eff)} (n={eff['n']})" if eff else "—"
        out.append(f"| {r['kind']} | {r['concepts']} | {r['margin']} | {ci(t1)} (n={t1['n']}) | {per} | {eff_s} | "
                   f"{ci(held)} (n={held['n']}) | {ci(pres)} (n={pres['n']}) |")
    return "\n".join(out)


def t2_tables(results: Path = RESULTS) -> str:
    out = ["| kind | method | attack | budget | ASR | n |", "|---|---|---|---:|---|---:|"]
    for f in sorted(results.glob("t2-*.json")):
        r = json.loads(f.read_text())
        for m, attacks in r["methods"].items():
            for a, s in attacks.items():
                out.append(f"| {r['kind']} | {m} | {a} | {s['budget']} | {s['asr']:.2f} [{s['ci95'][0]:.2f}, "
                           f"{s['ci95'][1]:.2f}] | {s['n']} |")
    return "\n".join(out)


if __name__ == "__main__":
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    print(t1_tables(where))
    print(guard_tables(where))
    print()
    print(t2_tables(where))
