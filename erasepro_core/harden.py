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
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from erasepro_core.solver import Moments

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


def closed_form_attack(q: torch.Tensor, gram: torch.Tensor, c_t: torch.Tensor, ridge: float,
                       den: torch.Tensor | None = None) -> tuple[torch.Tensor, list[float]]:
    """The attack's context columns c' (d × n) against ``W = W_o Q`` and, per column, the share of the target's
    original K/V they reproduce (1 − relative K/V residual in the G metric). ``den``: ‖G^½ c_t‖ per column
    (:func:`target_norms`), which depends only on the targets: computed here when not given."""
    qg = q.T @ gram
    c = ridge_solve(qg @ q, qg @ c_t, ridge)
    r = q @ c - c_t
    num = (r * (gram @ r)).sum(0).clamp_min(0).sqrt()
    if den is None:
        den = target_norms(gram, c_t)
    return c, [float(v) for v in (1 - num / den)]


def target_norms(gram: torch.Tensor, c_t: torch.Tensor) -> torch.Tensor:
    """‖G^½ c_t,j‖ per target column: the leak's denominator, the same every round."""
    return (c_t * (gram @ c_t)).sum(0).clamp_min(1e-300).sqrt()


@dataclass
class Hardened:
    """Constraint columns after hardening (the originals first), the final edit, and the per-round report."""

    x: torch.Tensor
    y: torch.Tensor
    edit: Any
    rounds: list[dict[str, Any]] = field(default_factory=list)


Solve = Callable[[torch.Tensor, torch.Tensor, "Moments | None"], Any]


def harden(solve: Solve, x: torch.Tensor, y: torch.Tensor, c_t: torch.Tensor, y_t: torch.Tensor,
           gram: torch.Tensor, rounds: int, ridge: float = HARDEN_RIDGE) -> Hardened:
    """``rounds`` attack-and-constrain rounds. ``solve(x, y, summed)`` returns the method's KVEdit (``a``, ``b``)
    for constraint columns x → y (``summed``: their moments X Xᵀ, (Y − X) Xᵀ once past n = d, else None);
    ``c_t``/``y_t`` are the original target columns the attack aims at and the anchor columns they must map to.
    Each round adds ``c_t.shape[1]`` columns.

    What does not change between rounds is computed once: the columns live in one buffer sized for the last
    round (no copy per round), the moments of a d-space solve are summed once per column (each round adds only
    its own, :class:`~erasepro_core.solver.Moments`), and the leak's denominators once."""
    if not 0 <= rounds <= MAX_HARDEN_ROUNDS:
        raise ValueError(f"harden_rounds must be in 0..{MAX_HARDEN_ROUNDS}")
    from erasepro_core.solver import Moments, in_dspace

    c_t, y_t = c_t.to(torch.float64), y_t.to(torch.float64)
    d, n, m = x.shape[0], x.shape[1], c_t.shape[1]
    # In the columns' own dtype: float32 past n = d (the solve then reads only d × d moments of them).
    xs, ys = x.new_empty(d, n + rounds * m), y.new_empty(y.shape[0], n + rounds * m)
    xs[:, :n], ys[:, :n] = x, y
    summed = Moments.of(x, y) if in_dspace(n, d) else None
    eye = torch.eye(d, dtype=torch.float64)
    den = target_norms(gram, c_t)
    edit = solve(xs[:, :n], ys[:, :n], summed)
    report = []
    for r in range(rounds + 1):
        q = eye + edit.a.to(torch.float64) @ edit.b.to(torch.float64)
        found, leak = closed_form_attack(q, gram, c_t, ridge, den)
        entry = {"round": r, "leak_mean": round(sum(leak) / len(leak), 4), "leak_max": round(max(leak), 4),
                 "norm_ratio": round(float(found.norm() / c_t.norm()), 4), "n_columns": n}
        report.append(entry)
        if r == rounds:
            break
        xs[:, n : n + m], ys[:, n : n + m] = found, y_t
        n += m
        if summed is not None:
            summed.add(xs[:, n - m : n], ys[:, n - m : n])
        elif in_dspace(n, d):  # the columns just crossed the width: summed once, then kept
            summed = Moments.of(xs[:, :n], ys[:, :n])
        edit = solve(xs[:, :n], ys[:, :n], summed)
    return Hardened(xs[:, :n], ys[:, :n], edit, report)


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
