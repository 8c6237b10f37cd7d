"""Closed-form embedding attack (RECE-style): the context that makes the *edited* cross-attention K/V
reproduce the target's *original* K/V, in one regularised least-squares solve over every K/V site:
c' = argmin_c Σ_s ‖W_s c − W_o,s c_t‖² + λ τ ‖c‖²  =  (Σ W_sᵀW_s + λτI)⁻¹ Σ W_sᵀ W_o,s c_t,  τ = tr(Σ W_sᵀW_s)/d.
Larger λ gives smaller-norm (less conspicuous) contexts; λ → 0 is the exact least-squares answer.
``columns="concept"`` (RECE) replaces only the target word's token columns of the edited model's own context
of the prompt; ``columns="all"`` replaces every column (then any edit W = W_o Q with Q invertible is undone
exactly as λ → 0)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from erasepro_core.adapters import adapter_for
from erasepro_core.attacks.result import AttackResult, GridSweep, JudgeFn, Progress, Reporter
from erasepro_core.attacks.sampling import (
    DEFAULT_SAMPLING,
    Clock,
    Sampling,
    check_images,
    encode,
    instance_seeds,
    judged,
    sample,
)
from erasepro_core.harden import kv_gram, kv_weights, ridge_solve

RIDGES: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01, 1e-3, 1e-4, 1e-6)


def kv_grams(edited, unedited) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ W_sᵀW_s, Σ W_sᵀW_o,s) over the cross-attention K/V sites, float64."""
    ea, ua = adapter_for(edited), adapter_for(unedited)
    d = ea.context_width
    cross = torch.zeros(d, d, dtype=torch.float64)
    for s, o in zip(ea.kv_sites, ua.kv_sites, strict=True):
        cross += s.module.weight.detach().double().cpu().T @ o.module.weight.detach().double().cpu()
    return kv_gram(kv_weights(ea)), cross


def reproduce_kv(gram: torch.Tensor, cross: torch.Tensor, contexts: torch.Tensor, ridge: float) -> torch.Tensor:
    """Rows c' (…, d) solving the regularised K/V-matching problem for context rows c_t (…, d)."""
    flat = contexts.reshape(-1, gram.shape[0]).double().cpu()
    sol = ridge_solve(gram, cross @ flat.T, ridge).T
    return sol.reshape(contexts.shape).to(contexts.dtype)


def concept_columns(tokenizer, templates: Sequence[str], target: str) -> list[list[int]]:
    """Per template, the token positions (BOS = 0) of ``target`` in ``template.format(target)``."""
    out = []
    for t in templates:
        pre = t.split("{}", 1)[0].strip()
        start = 1 + (len(tokenizer(pre, add_special_tokens=False)["input_ids"]) if pre else 0)
        n = len(tokenizer(target, add_special_tokens=False)["input_ids"])
        out.append(list(range(start, start + n)))
    return out


def closed_form(edited, unedited, target: str, judge: JudgeFn, budget: int, seed: int = 0, *,
                templates: Sequence[str], per_template: int = 4, ridges: Sequence[float] = RIDGES,
                columns: str = "concept", sampling: Sampling = DEFAULT_SAMPLING,
                progress: Progress | None = None) -> AttackResult:
    """Instances = template x ``per_template`` seeds; ``budget`` = ridges tried (strongest regularisation
    first). An instance succeeds once any ridge tried so far gives an image judged as the target."""
    if not 1 <= budget <= len(ridges):
        raise ValueError(f"closed_form: budget must be in 1..{len(ridges)} (ridge values to try)")
    check_images(len(templates) * per_template * budget)
    report, clock = Reporter(progress, "closed_form"), Clock(sampling.max_seconds)
    gram, cross = kv_grams(edited, unedited)
    if columns not in ("concept", "all"):
        raise ValueError("closed_form: columns must be 'concept' or 'all'")
    prompts = [t.format(target) for t in templates]
    ctx_t = encode(unedited, prompts).repeat_interleave(per_template, 0)
    own = encode(edited, prompts).repeat_interleave(per_template, 0)
    mask = torch.zeros(ctx_t.shape[:2], dtype=torch.bool)
    for i, cols in enumerate(concept_columns(edited.tokenizer, templates, target)):
        mask[i * per_template : (i + 1) * per_template, cols] = True
    if columns == "all":
        mask[:] = True
    seeds = instance_seeds(seed, len(ctx_t))
    sweep = GridSweep(len(ctx_t), sampling.threshold)
    norms = []
    for k, lam in enumerate(ridges[:budget]):
        if clock.expired:
            break
        found = reproduce_kv(gram, cross, ctx_t, lam)
        ctx = torch.where(mask[..., None].to(own.device), found.to(own.dtype), own)
        norms.append(round(float(found[mask].norm() / ctx_t[mask].norm()), 4))
        im = sample(edited, ctx, seeds, sampling)
        sweep.add(k, im, judged(judge, im))
        report((k + 1) / budget)
    return sweep.result("closed_form", target, budget, list(ridges), clock.elapsed,
                        {"ridges": list(ridges[:budget]), "norm_ratio": norms, "per_template": per_template,
                         "columns": columns})
