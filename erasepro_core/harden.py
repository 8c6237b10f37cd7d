"""Closed-form adversarial hardening of the K/V edit, entirely in context space (no images, no encoder pass).

Every method's K/V edit is  W_s = W_o,s Q  with Q = I + A B shared by all sites. Round r attacks the current
edit with the closed-form embedding attack (erasepro_core.attacks.context_solve):
    c'_j = argmin_c Σ_s ‖W_s c − W_o,s c_t,j‖² + λτ‖c‖²  =  (QᵀG Q + λτI)⁻¹ QᵀG c_t,j,   G = Σ_s W_o,sᵀ W_o,s,
for each constrained target column c_t,j, adds the found c'_j as constraint columns whose target is the
anchor's column y_j (W c'_j = W_o y_j) and re-solves the method's edit (zero residual for ErasePro) under the
same preservation. The report's ``leak`` per round is the share of the target's original K/V the attack still
reproduces,  1 − ‖G^½(Q c' − c_t)‖/‖G^½ c_t‖  (1 = fully reproduced; 0 = nothing).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

HARDEN_RIDGE = 0.01  # λ of the attack each round solves (relative to τ = tr(QᵀGQ)/d)
MAX_HARDEN_ROUNDS = 8
_GRAMS: OrderedDict[str, torch.Tensor] = OrderedDict()  # G per base model (a worker edits the same base often)
_GRAMS_KEPT = 4


def kv_gram(sites: list[torch.Tensor], key: str | None = None) -> torch.Tensor:
    """G = Σ_s W_sᵀ W_s (d × d, float64) over K/V weights ``sites``; cached under ``key`` when given."""
    if key is not None and key in _GRAMS:
        _GRAMS.move_to_end(key)
        return _GRAMS[key]
    d = sites[0].shape[1]
    g = torch.zeros(d, d, dtype=torch.float64)
    for w in sites:
        w64 = w.detach().to(torch.float64).cpu()
        g += w64.T @ w64
    if key is not None:
        _GRAMS[key] = g
        while len(_GRAMS) > _GRAMS_KEPT:
            _GRAMS.popitem(last=False)
    return g


def ridge_solve(m: torch.Tensor, rhs: torch.Tensor, ridge: float) -> torch.Tensor:
    """(M + ridge·τI)⁻¹ rhs with τ = tr(M)/d: the ridge is relative to M's mean eigenvalue (scale-free)."""
    d = m.shape[0]
    tau = float(torch.trace(m)) / d
    return torch.linalg.solve(m + ridge * tau * torch.eye(d, dtype=torch.float64), rhs)


def closed_form_attack(q: torch.Tensor, gram: torch.Tensor, c_t: torch.Tensor, ridge: float
                       ) -> tuple[torch.Tensor, list[float]]:
    """The attack's context columns c' (d × n) against ``W = W_o Q`` and, per column, the share of the target's
    original K/V they reproduce (1 − relative K/V residual in the G metric)."""
    qg = q.T @ gram
    c = ridge_solve(qg @ q, qg @ c_t, ridge)
    r = q @ c - c_t
    num = (r * (gram @ r)).sum(0).clamp_min(0).sqrt()
    den = (c_t * (gram @ c_t)).sum(0).clamp_min(1e-300).sqrt()
    return c, [float(v) for v in (1 - num / den)]


@dataclass
class Hardened:
    """Constraint columns after hardening (the originals first), the final edit, and the per-round report."""

    x: torch.Tensor
    y: torch.Tensor
    edit: Any
    rounds: list[dict[str, Any]] = field(default_factory=list)


def harden(solve: Callable[[torch.Tensor, torch.Tensor], Any], x: torch.Tensor, y: torch.Tensor,
           c_t: torch.Tensor, y_t: torch.Tensor, gram: torch.Tensor, rounds: int,
           ridge: float = HARDEN_RIDGE) -> Hardened:
    """``rounds`` attack-and-constrain rounds. ``solve(x, y)`` returns the method's KVEdit (``a``, ``b``) for
    constraint columns x → y; ``c_t``/``y_t`` are the original target columns the attack aims at and the anchor
    columns they must map to. Each round adds ``c_t.shape[1]`` columns."""
    if not 0 <= rounds <= MAX_HARDEN_ROUNDS:
        raise ValueError(f"harden_rounds must be in 0..{MAX_HARDEN_ROUNDS}")
    c_t, y_t = c_t.to(torch.float64), y_t.to(torch.float64)
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    edit = solve(x, y)
    report = []
    for r in range(rounds + 1):
        q = eye + edit.a.to(torch.float64) @ edit.b.to(torch.float64)
        found, leak = closed_form_attack(q, gram, c_t, ridge)
        entry = {"round": r, "leak_mean": round(sum(leak) / len(leak), 4), "leak_max": round(max(leak), 4),
                 "norm_ratio": round(float(found.norm() / c_t.norm()), 4), "n_columns": int(x.shape[1])}
        report.append(entry)
        if r == rounds:
            break
        # In the columns' own dtype: float32 past n = d (the solve then reads only d × d moments of them).
        x, y = torch.cat([x, found.to(x.dtype)], 1), torch.cat([y, y_t.to(y.dtype)], 1)
        edit = solve(x, y)
    return Hardened(x, y, edit, report)


def original_target_columns(adapter: Any, spec: Any, pairs: Any, x: torch.Tensor, carried: bool) -> torch.Tensor:
    """The target columns an attacker aims at: the *unedited* encoder's context at the paired positions. Without
    a progressive stage these are the constrained columns themselves; with one they are re-encoded."""
    n = pairs.n_columns
    if not carried:
        return x[:, :n]
    from erasepro_core.encode import context_features

    prompts = [tpl.format(e.target) for e in spec.edits for tpl in spec.templates]
    positions: list[list[int]] = [[] for _ in prompts]
    for row, pos, _, _ in pairs.positions:
        positions[row].append(pos)
    keep = [i for i, p in enumerate(positions) if p]
    return context_features(adapter, [prompts[i] for i in keep], [positions[i] for i in keep]).double().cpu()


def kv_weights(adapter: Any) -> list[torch.Tensor]:
    return [s.module.weight for s in adapter.kv_sites]
