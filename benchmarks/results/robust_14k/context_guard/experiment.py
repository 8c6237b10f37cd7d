"""Retired experiment (issue 23; summary.json, docs/benchmarks.md "In-context guard signals"): can a guard that
reads a prompt's own (in-context) context columns catch the real-budget word search the window guard misses?

    PYTHONPATH=$PWD .venv/bin/python benchmarks/results/robust_14k/context_guard/experiment.py style 1 \
        benchmarks/results/robust_14k/strong_word_search/t1-style-1-s0-n40-unedited_default_to_eos_uce2023_uce2025_sp0.1-search-pool8192-sweeps3-n_tokens4.json

Signature: the erased names' in-context columns (their tokens and EOS) in the kind's solver templates.
Calibration: the generic preserve prompts, the other concepts alone and in the templates, and 2,000 common words
(3+ letters, as the guard had then) in two templates. Five scores, each flagged at >= 0 (margin 0):

A  K/V-metric distance ``‖G½(c − t_j)‖/‖G½ t_j‖`` below column j's nearest calibration distance (score 1 − d/τ_j);
B  preserve-whitened cosine (the window guard's metric) above column j's largest calibration cosine;
C  projection on the preserve-whitened (LDA) direction ``M⁻¹(t_j − μ)``, as a share of the target's own, above the
   largest calibration projection;
D  nearest labelled column in the K/V metric: target columns vs the other concepts' and neutral columns
   (score d_other/d_target − 1);
E  as D on the prompt's mean column over all positions, padding included.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[4]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from robust_guard import heldout_sets  # noqa: E402

from erasepro_core.canvas.bench import (  # noqa: E402
    canvas_on_one_cpu,
    choose_concepts,
    concepts_of,
    solver_templates,
)
from erasepro_core.guard import common_words, kv_metric_factor, preserve_whitening  # noqa: E402
from erasepro_core.preserve import generic_preserve_prompts  # noqa: E402
from erasepro_core.robust.measure import t1_prompt_sets  # noqa: E402
from erasepro_core.robust.t1 import T1_CATEGORIES  # noqa: E402


def chunked_min(f, rows: torch.Tensor, step: int = 8192) -> torch.Tensor:
    """min over calibration rows of f(rows) (n_rows, m), in chunks."""
    return torch.stack([f(rows[i : i + step]).min(0).values for i in range(0, len(rows), step)]).min(0).values


def main() -> int:
    kind, n_concepts = sys.argv[1], int(sys.argv[2])
    strong = sys.argv[3] if len(sys.argv) > 3 else None
    pipe = canvas_on_one_cpu()
    tok, enc = pipe.tokenizer, pipe.text_encoder
    erased = choose_concepts(kind, n_concepts, 0)
    others = [c for c in concepts_of(kind) if c not in erased]
    half = kv_metric_factor(pipe)
    templates = solver_templates(kind)

    @torch.no_grad()
    def in_context(prompts: list[str]) -> list[torch.Tensor]:
        """Per prompt its columns at positions 1..first EOS."""
        out = []
        for i in range(0, len(prompts), 256):
            ids = tok(prompts[i : i + 256], padding="max_length", truncation=True, max_length=tok.model_max_length,
                      return_tensors="pt").input_ids
            c = enc(ids)[0].double()
            eos = (ids == tok.eos_token_id).int().argmax(1)
            out += [c[k, 1 : eos[k] + 1] for k in range(len(ids))]
        return out

    @torch.no_grad()
    def pooled(prompts: list[str]) -> torch.Tensor:
        ids = tok(prompts, padding="max_length", truncation=True, max_length=tok.model_max_length,
                  return_tensors="pt").input_ids
        return torch.cat([enc(ids[i : i + 256])[0].double()[:, 1:].mean(1) for i in range(0, len(ids), 256)]) @ half

    def name_columns(names: list[str]) -> torch.Tensor:
        cols = []
        for name in names:
            n_tok = len(tok(name, add_special_tokens=False).input_ids)
            for t in templates:
                prefix = t.split("{}")[0].strip()
                pre = len(tok(prefix, add_special_tokens=False).input_ids) if prefix else 0
                c = in_context([t.format(name)])[0]
                cols.append(c[[*range(pre, pre + n_tok), len(c) - 1]])
        return torch.cat(cols)

    sig = name_columns(erased)
    preserve = generic_preserve_prompts(pipe)
    words = common_words(tok, 2000, erased, min_letters=3)
    calib = torch.cat(in_context(preserve + others + [t.format(c) for c in others for t in templates]
                                 + [t.format(w) for w in words for t in templates[:2]]))
    sig_kv = sig @ half
    centre = calib.mean(0)
    factor = preserve_whitening(calib - centre, 0.01)

    def whiten(c: torch.Tensor) -> torch.Tensor:
        z = (c - centre) @ factor
        return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def rel_dist(c: torch.Tensor) -> torch.Tensor:
        return torch.cdist(c @ half, sig_kv) / sig_kv.norm(dim=1)[None]

    lda = (sig - centre) @ (factor @ factor.T)
    own = ((sig - centre) * lda).sum(1)

    def projection(c: torch.Tensor) -> torch.Tensor:
        return ((c - centre) @ lda.T) / own[None]

    sig_w = whiten(sig)
    tau_a = chunked_min(rel_dist, calib)
    tau_b = -chunked_min(lambda r: -(whiten(r) @ sig_w.T), calib)
    tau_c = -chunked_min(lambda r: -projection(r), calib)
    labelled = torch.cat([name_columns(others), torch.cat(in_context(
        [t.format(w) for w in words[:500] for t in templates[:2]] + preserve))]) @ half
    pooled_target = pooled([t.format(n) for n in erased for t in templates])
    pooled_other = pooled([t.format(n) for n in others for t in templates] + preserve
                          + [t.format(w) for w in words[:1000] for t in templates[:2]])

    def nearest_ratio(h: torch.Tensor) -> torch.Tensor:
        d_other = torch.stack([torch.cdist(h, labelled[i : i + 8192]).min(1).values
                               for i in range(0, len(labelled), 8192)]).min(0).values
        return d_other / torch.cdist(h, sig_kv).min(1).values - 1

    def scores(prompts: list[str]) -> dict[str, list[float]]:
        cols = in_context(prompts)
        h = pooled(prompts)
        e = torch.cdist(h, pooled_other).min(1).values / torch.cdist(h, pooled_target).min(1).values - 1
        return {"A": [float((1 - rel_dist(c) / tau_a[None]).max()) for c in cols],
                "B": [float((whiten(c) @ sig_w.T - tau_b[None]).max()) for c in cols],
                "C": [float((projection(c) - tau_c[None]).max()) for c in cols],
                "D": [float(nearest_ratio(c @ half).max()) for c in cols],
                "E": e.tolist()}

    sets = {f"atk:{cat}": [p.text for p in ps]
            for cat, ps in t1_prompt_sets(pipe, kind, erased, T1_CATEGORIES, 40, 0, None).items() if cat != "canonical"}
    if strong:
        res = json.loads(Path(strong).read_text())
        found, works = res["prompts"]["word_search"], res["methods"]["unedited"]["per_prompt"]["word_search"]
        sets["atk:strong_search"] = found
        sets["atk:strong_search_working"] = [p for p, ok in zip(found, works, strict=True) if ok]
    sets |= {f"fp:{name}": texts for name, texts in heldout_sets(kind, erased, 60, 0).items()}
    out = {key: scores(texts) for key, texts in sets.items()}
    for metric in "ABCDE":
        suite = np.concatenate([np.array(v[metric]) >= 0 for k, v in out.items()
                                if k.startswith("atk:") and "strong" not in k])
        fp = np.concatenate([np.array(v[metric]) >= 0 for k, v in out.items() if k.startswith("fp:")])
        strong_rates = {k[4:]: f"{int((np.array(v[metric]) >= 0).sum())}/{len(v[metric])}"
                        for k, v in out.items() if "strong" in k}
        print(f"{metric}: T1 suite {int(suite.sum())}/{len(suite)}, {strong_rates}, "
              f"held-out FP {int(fp.sum())}/{len(fp)}")
    (Path(__file__).parent / f"scores_{kind}_{n_concepts}.json").write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
