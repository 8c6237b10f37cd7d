"""Plot ASR-vs-budget curves from robustness.py JSON files (PIL only, no plotting library).

    .venv/bin/python benchmarks/robustness_plot.py benchmarks/results/robustness_*.json --out docs/robustness.png

One panel per (case, attack): ASR (0..1) against the attack's budget, one line per method.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]
W, H, PAD = 300, 200, 36


def curves(data: dict, attack: str) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{case: {method: [(budget, asr), ...]}}: each run's own curve, averaged over runs (targets x seeds)."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for case, methods in data["cases"].items():
        for method, entry in methods.items():
            runs = entry.get("runs", {}).get(attack) or []
            by_budget: dict[float, list[float]] = {}
            for run in runs:
                for b, a in run["curve"]:
                    by_budget.setdefault(float(b), []).append(float(a))
            if by_budget:
                out.setdefault(case, {})[method] = [(b, sum(v) / len(v)) for b, v in sorted(by_budget.items())]
    return out


def panel(draw: ImageDraw.ImageDraw, x0: int, y0: int, title: str, lines: dict[str, list[tuple[float, float]]],
          methods: list[str]) -> None:
    draw.rectangle([x0 + PAD, y0 + PAD // 2, x0 + W - 8, y0 + H - PAD], outline=(0, 0, 0))
    draw.text((x0 + PAD, y0 + 2), title, fill=(0, 0, 0))
    xmax = max((b for pts in lines.values() for b, _ in pts), default=1.0) or 1.0

    def at(b: float, a: float) -> tuple[float, float]:
        return (x0 + PAD + (W - 8 - PAD) * b / xmax, y0 + H - PAD - (H - PAD - PAD // 2) * a)

    for frac in (0.0, 0.5, 1.0):
        y = at(0, frac)[1]
        draw.text((x0 + 4, y - 6), f"{frac:.1f}", fill=(0, 0, 0))
    draw.text((x0 + W - 40, y0 + H - PAD + 4), f"{xmax:g}", fill=(0, 0, 0))
    draw.text((x0 + PAD, y0 + H - PAD + 4), "0", fill=(0, 0, 0))
    for name, pts in lines.items():
        colour = COLOURS[methods.index(name) % len(COLOURS)]
        xy = [at(b, a) for b, a in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", type=Path)
    ap.add_argument("--attacks", nargs="+", default=["soft_token", "vocabulary", "word_search"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    data = [json.loads(p.read_text()) for p in args.json]
    rows: list[tuple[str, str, dict]] = []
    methods: list[str] = []
    for d in data:
        for attack in args.attacks:
            for case, lines in curves(d, attack).items():
                rows.append((case, attack, lines))
                methods += [m for m in lines if m not in methods]
    if not rows:
        raise SystemExit("no curves in the given files")
    cases = list(dict.fromkeys(r[0] for r in rows))
    legend_h = 16 * len(methods) + 8
    img = Image.new("RGB", (W * len(args.attacks), H * len(cases) + legend_h), "white")
    draw = ImageDraw.Draw(img)
    for case, attack, lines in rows:
        panel(draw, W * args.attacks.index(attack), H * cases.index(case), f"{case}: {attack} ASR", lines,
              methods)
    for i, m in enumerate(methods):
        y = H * len(cases) + 4 + 16 * i
        draw.rectangle([8, y + 3, 20, y + 11], fill=COLOURS[i % len(COLOURS)])
        draw.text((26, y), m, fill=(0, 0, 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
