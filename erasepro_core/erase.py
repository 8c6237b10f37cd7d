"""``erase``: the progressive zero-residual edit (ErasePro) and the UCE baseline.

Progressive stage, text-encoder layer i (shallow → deep):  Δ_i X_i = β_i (H_anchor,i − H_target,i) on fc2.
Final stage, every cross-attention K/V:  W = W_o + W_o P,  P = (Y − X) G,  so  W X = W_o Y.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from erasepro_core.adapters import Adapter, TextTower, adapter_for
from erasepro_core.delta import Delta, fingerprint
from erasepro_core.features import PairSet, build_pairs, contains_concept
from erasepro_core.preserve import (
    FeatureCache,
    PreserveStats,
    SiteStats,
    default_cache,
    generic_preserve_prompts,
    model_key,
    prompt_features,
    stats_of,
)
from erasepro_core.solver import Metric, constraint_map, relative
from erasepro_core.spec import ErasureSpec

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]
MAX_HELDOUT_EDITS = 16  # held-out leak is measured on (at most) this many edits: a report, not the solve


class ErasureError(ValueError):
    """The spec cannot be applied to this model (bad layer index, prompt too long, …)."""


@dataclass
class ErasureResult:
    delta: Delta
    report: dict[str, Any]


def default_layers(n: int) -> list[int]:
    """Progressive-stage layers when the spec names none: all of a small encoder, else four spread ones."""
    if n <= 4:
        return list(range(n))
    return sorted({round(k * n / 4) for k in range(4)})


def schedule_fractions(schedule: str, k: int) -> list[float]:
    """β_j for k progressive layers; the final stage (β=1) is stage k+1.

    Each β_j is a fraction of the gap *remaining* at that layer. ``uniform`` gives every stage an equal
    share of the initial gap; ``front`` gives stage j a share ∝ (k+1−j), so shallow layers carry more.
    """
    m = k + 1
    shares = [1.0] * m if schedule == "uniform" else [float(m - j) for j in range(m)]
    out, rest = [], sum(shares)
    for s in shares[:k]:
        out.append(s / rest)
        rest -= s
    return out


def _resolve_layers(spec: ErasureSpec, tower: TextTower) -> list[int]:
    if spec.method == "uce" or spec.schedule == "none":
        return []
    n = tower.n_context_layers
    if spec.layers is None:
        return default_layers(n)
    out = []
    for i in spec.layers:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise ErasureError(
                f"layers: {i} is out of range for {tower.component}, whose {n} layers feed the UNet "
                f"(valid: {-n}..{n - 1})"
            )
        out.append(j)
    return sorted(out)


def _check_same_tokens(adapter: Adapter, pairs: PairSet, edits: list[tuple[str, str]], templates: list[str],
                       policy: str) -> None:
    for tower in adapter.towers[1:]:
        other = build_pairs(tower.tokenizer, edits, templates, policy)
        if other.positions != pairs.positions:
            raise ErasureError(f"{tower.component}'s tokenizer splits the prompts differently from the first")


class _Progress:
    def __init__(self, fn: Progress | None, n_steps: int) -> None:
        self.fn, self.n, self.i = fn, max(n_steps, 1), 0

    def step(self, stage: str) -> None:
        self.i += 1
        if self.fn is not None:
            self.fn(stage, min(self.i / self.n, 1.0))


def erase(
    pipe: Any,
    spec: ErasureSpec | dict,
    progress: Progress | None = None,
    cache: FeatureCache | None = None,
) -> ErasureResult:
    """Compute the erasure ``spec`` describes on ``pipe``; ``pipe`` itself is left unchanged."""
    if not isinstance(spec, ErasureSpec):
        spec = ErasureSpec.model_validate(spec)
    cache = cache or default_cache()
    adapter = adapter_for(pipe)
    t0 = time.perf_counter()
    with torch.no_grad():
        result = _erase(pipe, adapter, spec, progress, cache)
    result.report["timings"]["total_s"] = round(time.perf_counter() - t0, 4)
    return result


def _erase(pipe: Any, adapter: Adapter, spec: ErasureSpec, progress: Progress | None,
           cache: FeatureCache) -> ErasureResult:
    timings: dict[str, float] = {}
    warnings: list[str] = []
    t = time.perf_counter()
    edits = [(e.target, e.anchor) for e in spec.edits]
    targets = [e.target for e in spec.edits]
    policy = "last" if spec.method == "uce" else spec.token_policy
    tok0 = adapter.towers[0].tokenizer
    try:
        pairs = build_pairs(tok0, edits, spec.templates, policy)
        held = build_pairs(tok0, edits[:MAX_HELDOUT_EDITS], spec.heldout_templates, policy)
        _check_same_tokens(adapter, pairs, edits, spec.templates, policy)
    except ValueError as exc:
        raise ErasureError(str(exc)) from exc
    layers = {ti: _resolve_layers(spec, tw) for ti, tw in enumerate(adapter.towers)}
    n_layers = sum(len(v) for v in layers.values())
    prog = _Progress(progress, 3 + n_layers + len(adapter.kv_sites) // 8)
    timings["tokenize_s"] = time.perf_counter() - t

    # Preservation: generic statistics are cached per base model; the user's prompts and the generic
    # prompts that mention a target (dropped) are computed per job and added/subtracted.
    t = time.perf_counter()
    generic = generic_preserve_prompts(pipe) if spec.default_preserve else []
    dropped = [p for p in generic if contains_concept(p, targets)]
    user = [tpl.format(p) for p in spec.preserve for tpl in spec.templates]
    user_dropped = [p for p in user if contains_concept(p, targets)]
    if dropped or user_dropped:
        msg = f"dropped {len(dropped) + len(user_dropped)} preserve prompt(s) that mention a target"
        warnings.append(msg)
        log.warning(msg)
    user = [p for p in user if p not in user_dropped]
    base_key = model_key(adapter)
    pres = _preserve_stats(adapter, base_key, spec, generic, dropped, user, layers, cache)
    prog.step("preserve")
    timings["preserve_s"] = time.perf_counter() - t

    mkey = base_key if not (user or dropped) else None
    sites: list[dict[str, Any]] = []
    tensors: dict[str, torch.Tensor] = {}
    originals: dict[str, torch.Tensor] = {}

    # Progressive stage, one carried pass per tower.
    t = time.perf_counter()
    parts: dict[str, list[torch.Tensor]] = {"x": [], "y": [], "xh": [], "yh": []}
    for ti, tower in enumerate(adapter.towers):
        out = _carry_tower(ti, tower, spec, pairs, held, layers[ti], pres, cache, mkey, prog)
        for k in parts:
            if out[k] is not None:
                parts[k].append(out[k])
        sites += out["sites"]
        tensors.update(out["tensors"])
        originals.update(out["originals"])
    timings["progressive_s"] = time.perf_counter() - t

    # Final stage on the UNet's cross-attention K/V: one map shared by every site. Towers (SDXL) concatenate
    # along features; their token positions coincide (checked above).
    t = time.perf_counter()
    x, y = torch.cat(parts["x"]).double(), torch.cat(parts["y"]).double()
    xh = torch.cat(parts["xh"]).double() if parts["xh"] else None
    yh = torch.cat(parts["yh"]).double() if parts["yh"] else None
    if spec.method == "uce":
        a, b, rank = _uce_factors(spec, x, y, pres.ctx)
    else:
        metric = _metric(cache, mkey, ("ctx",), pres.ctx, spec, x.shape[0])
        g, rank = constraint_map(x, metric)
        a, b = y - x, g
    prog.step("final")
    # Report inputs in float32: the residuals are measured on the weights as written.
    x32, y32 = x.float(), y.float()
    xh32, yh32 = (xh.float(), yh.float()) if xh is not None else (None, None)
    drift = pres.ctx.sample if pres.ctx is not None and pres.ctx.n else None
    # Δ_W = W_o A B with A B = P: two thin products while P has low rank (n < d), else P itself.
    low_rank = a.shape[1] < a.shape[0]
    p_full = None if low_rank else a @ b
    b_drift = None
    if drift is not None:
        b_drift = b @ drift.double() if low_rank else p_full @ drift.double()
    for k, site in enumerate(adapter.kv_sites):
        w = site.module.weight.detach()
        wa = w.double() @ (a if low_rank else p_full).to(w.device)
        delta = wa @ b.to(w.device) if low_rank else wa
        new = (w.double() + delta).to(w.dtype)
        tensors[site.key], originals[site.key] = new.cpu(), w.cpu()
        report = _kv_report(site.key, w.float(), new.float(), x32, y32, xh32, yh32, rank)
        if drift is not None:
            report["preserve_drift"] = relative(wa @ b_drift.to(w.device), w.float() @ drift.to(w.device))
        sites.append(report)
        if (k + 1) % 8 == 0:
            prog.step("final")
    timings["final_s"] = time.perf_counter() - t

    report = _summary(spec, adapter, pairs, held, layers, sites, warnings)
    report["timings"] = {k: round(v, 4) for k, v in timings.items()}
    delta = Delta(
        tensors=tensors,
        fingerprint=fingerprint(originals),
        spec=spec.model_dump(mode="json"),
        report=report,
        base={"family": adapter.family, "dtype": str(next(iter(tensors.values())).dtype).replace("torch.", ""),
              "name_or_path": str(getattr(pipe, "name_or_path", "") or "")},
    )
    prog.step("done")
    return ErasureResult(delta=delta, report=report)


def _split(positions: list[tuple[int, int, int, int]], at: int) -> tuple[list[int], list[int]]:
    return [p[at] for p in positions], [p[at + 1] for p in positions]


def _preserve_stats(adapter: Adapter, base_key: str, spec: ErasureSpec, generic: list[str], dropped: list[str],
                    user: list[str], layers: dict[int, list[int]], cache: FeatureCache) -> PreserveStats:
    # UCE preserves the last subject token of each preserve prompt (un-normalised sums, see _uce_factors);
    # ErasePro does the same by default (measured: protecting every token also protects the context and EOS
    # features that target prompts share with unrelated ones, and the erasure leaks on complex prompts).
    last = spec.method == "uce" or spec.preserve_tokens == "last"
    base = cache.generic_stats(adapter, base_key, generic, layers, last_only=last) if generic else None
    extra = removed = removed_ctx = None
    extra_fc2: dict = {}
    removed_fc2: dict = {}
    if user:
        extra_fc2, ctx = prompt_features(adapter, user, layers, last_only=last)
        extra = stats_of(ctx)
    if dropped:
        removed_fc2, removed_ctx = prompt_features(adapter, dropped, layers, last_only=last)
        removed = stats_of(removed_ctx)
    out = PreserveStats()
    keys = [(t, i) for t, ls in layers.items() for i in ls]
    if base is None and extra is None:
        return out
    empty = lambda d: SiteStats(torch.zeros(d, d, dtype=torch.float64), 0, torch.zeros(d, 0))  # noqa: E731
    for k in keys:
        d = adapter.towers[k[0]].fc2(k[1]).in_features
        src = base.fc2[k] if base is not None else empty(d)
        out.fc2[k] = src.combined(
            stats_of(extra_fc2[k]) if k in extra_fc2 else None,
            stats_of(removed_fc2[k]) if k in removed_fc2 else None,
            removed_fc2.get(k),
        )
    src = base.ctx if base is not None else empty(adapter.context_width)
    out.ctx = src.combined(extra, removed, removed_ctx)
    return out


def _metric(cache: FeatureCache, mkey: str | None, site: tuple, stats: SiteStats | None,
            spec: ErasureSpec, d_in: int) -> Metric:
    def build() -> Metric:
        cov = stats.mean_cov() if stats is not None else None
        return Metric.build(d_in, cov, spec.preserve_weight, spec.ridge)

    if mkey is None:
        return build()
    key = (mkey, spec.default_preserve, spec.preserve_tokens, site, spec.preserve_weight, spec.ridge)
    return cache.metric(key, build)


class _Ragged:
    """Prompts grouped by token length, so each group is encoded without padding (CLIP is causal: states up to
    EOS do not depend on what follows). Columns are gathered by (row, position) across groups."""

    def __init__(self, tower: TextTower, rows: list[list[int]], length: int | None) -> None:
        by_len: dict[int, list[int]] = {}
        for r, ids in enumerate(rows):
            by_len.setdefault(length or len(ids), []).append(r)
        self.groups = [(n, idx) for n, idx in sorted(by_len.items())]
        self.ids = [tower.pad([rows[r] for r in idx], n) for n, idx in self.groups]
        self._where: dict[int, tuple[int, int]] = {}
        offset = 0
        self._offsets = []
        for g, (n, idx) in enumerate(self.groups):
            self._offsets.append(offset)
            for j, r in enumerate(idx):
                self._where[r] = (g, j)
            offset += n * len(idx)

    def index(self, rows: list[int], pos: list[int]) -> torch.Tensor:
        flat = []
        for r, p in zip(rows, pos, strict=True):
            g, j = self._where[r]
            flat.append(self._offsets[g] + j * self.groups[g][0] + p)
        return torch.tensor(flat, dtype=torch.long)

    @staticmethod
    def flat(states: list[torch.Tensor]) -> torch.Tensor:
        """All groups' states as one (tokens × d) matrix, to gather columns from with :meth:`index`."""
        return torch.cat([s.reshape(-1, s.shape[-1]) for s in states])


def _take(flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Columns (d × n) of flattened states at a precomputed ``index``."""
    return flat[index.to(flat.device)].T


def _carry_tower(ti: int, tower: TextTower, spec: ErasureSpec, pairs: PairSet, held: PairSet,
                 layers: list[int], pres: PreserveStats, cache: FeatureCache, mkey: str | None,
                 prog: _Progress) -> dict[str, Any]:
    """One pass: anchors through the original tower, targets carried through the tower as it is edited.

    Returns the context columns of constrained (``x``/``y``) and held-out (``xh``/``yh``) token pairs.
    """
    n_max = int(tower.tokenizer.model_max_length)
    to_end = spec.token_policy == "to_end" and spec.method != "uce"
    nt, na = len(pairs.target_ids), len(pairs.anchor_ids)
    targets = _Ragged(tower, pairs.target_ids + held.target_ids, n_max if to_end else None)
    anchors = _Ragged(tower, pairs.anchor_ids + held.anchor_ids, n_max if to_end else None)
    it = targets.index(*_split(pairs.positions, 0))
    ia = anchors.index(*_split(pairs.positions, 2))
    ith = targets.index([r + nt for r in _split(held.positions, 0)[0]], _split(held.positions, 0)[1])
    iah = anchors.index([r + na for r in _split(held.positions, 2)[0]], _split(held.positions, 2)[1])
    flat = _Ragged.flat

    h_a = [tower.embed(ids) for ids in anchors.ids]
    h_t = [tower.embed(ids) for ids in targets.ids]
    betas = dict(zip(layers, schedule_fractions(spec.schedule, len(layers)), strict=True))
    sites: list[dict[str, Any]] = []
    tensors: dict[str, torch.Tensor] = {}
    originals: dict[str, torch.Tensor] = {}
    for i in range(tower.n_context_layers):
        h_a = [tower.layer(i, h)[0] for h in h_a]
        outs = [tower.layer(i, h) for h in h_t]
        h_out, xin = [o[0] for o in outs], [o[1] for o in outs]
        if i not in betas:
            h_t = h_out
            continue
        beta = betas[i]
        f_in, f_a, f_out = flat(xin), flat(h_a), flat(h_out)  # flattened once per layer, gathered often
        x = _take(f_in, it).double()
        anchor = _take(f_a, ia).double()
        gap = anchor - _take(f_out, it).double()
        r = beta * gap
        stats = pres.fc2.get((ti, i))
        metric = _metric(cache, mkey, (ti, i), stats, spec, x.shape[0])
        g, rank = constraint_map(x, metric)
        w = tower.fc2(i).weight.detach()
        new = (w.double() + r @ g).to(w.dtype)
        applied = (new.double() - w.double())  # what the written weights actually change
        step = applied.to(w.dtype).T
        h_t = [o + xi @ step for o, xi in zip(h_out, xin, strict=True)]
        key = tower.fc2_name(i)
        tensors[key], originals[key] = new.cpu(), w.cpu()
        site: dict[str, Any] = {
            "site": key, "stage": "progressive", "tower": tower.component, "depth": i, "beta": round(beta, 6),
            "n_columns": x.shape[1], "rank": rank,
            "residual": relative(applied @ x - r, r),
            "gap_before": relative(gap, anchor),
            "gap_after": relative(anchor - _take(flat(h_t), it).double(), anchor),
            "update_norm": relative(applied, w),
        }
        if len(ith):
            xh = _take(f_in, ith).double()
            rh = beta * (_take(f_a, iah) - _take(f_out, ith)).double()
            site["heldout_residual"] = relative(applied @ xh - rh, rh)
        if stats is not None and stats.n:  # Δ C_s = R (G C_s): rank n, cheap
            site["preserve_drift"] = relative(r @ (g @ stats.sample.double()), w.float() @ stats.sample)
        sites.append(site)
        prog.step("progressive")
    ctx_t = flat([tower.to_context(h) for h in h_t])
    ctx_a = flat([tower.to_context(h) for h in h_a])
    return {
        "x": _take(ctx_t, it), "y": _take(ctx_a, ia),
        "xh": _take(ctx_t, ith) if len(ith) else None, "yh": _take(ctx_a, iah) if len(iah) else None,
        "sites": sites, "tensors": tensors, "originals": originals,
    }


def _uce_factors(spec: ErasureSpec, c: torch.Tensor, c_star: torch.Tensor,
                 pres: SiteStats | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """UCE's W = W_o Q with Q = I + (c* − c) cᵀ K⁻¹, K = λI + s_e c cᵀ + s_p Σ c_p c_pᵀ (same as its formula)."""
    d = c.shape[0]
    k = spec.uce_lambda * torch.eye(d, dtype=torch.float64) + spec.uce_erase_scale * c @ c.T
    if pres is not None and pres.n:
        k += spec.uce_preserve_scale * pres.gram
    b = torch.linalg.solve(k, c).T  # cᵀ K⁻¹ (K symmetric)
    return spec.uce_erase_scale * (c_star - c), b, int(torch.linalg.matrix_rank(c))


def _kv_report(key: str, w_o: torch.Tensor, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               xh: torch.Tensor | None, yh: torch.Tensor | None, rank: int) -> dict[str, Any]:
    target = w_o @ y
    site: dict[str, Any] = {
        "site": key, "stage": "final", "n_columns": x.shape[1], "rank": rank,
        "residual": relative(w @ x - target, target),
        "update_norm": relative(w - w_o, w_o),
    }
    if xh is not None:
        th = w_o @ yh
        site["heldout_residual"] = relative(w @ xh - th, th)
    return site


def _summary(spec: ErasureSpec, adapter: Adapter, pairs: PairSet, held: PairSet,
             layers: dict[int, list[int]], sites: list[dict[str, Any]], warnings: list[str]) -> dict[str, Any]:
    final = [s for s in sites if s["stage"] == "final"]
    mean = lambda vals: sum(vals) / len(vals) if vals else None  # noqa: E731
    return {
        "method": spec.method,
        "schedule": spec.schedule if spec.method == "erasepro" else None,
        "token_policy": "last" if spec.method == "uce" else spec.token_policy,
        "preserve_tokens": "last" if spec.method == "uce" else spec.preserve_tokens,
        "family": adapter.family,
        "layers": {adapter.towers[t].component: ls for t, ls in layers.items()},
        "n_edits": len(spec.edits),
        "n_constraints": pairs.n_columns,
        "n_heldout": held.n_columns,
        "summary": {
            "max_residual": max(s["residual"] for s in sites),
            "kv_residual": mean([s["residual"] for s in final]),
            "kv_heldout_residual": mean([s["heldout_residual"] for s in final if "heldout_residual" in s]),
            "kv_preserve_drift": mean([s["preserve_drift"] for s in final if "preserve_drift" in s]),
            "kv_update_norm": mean([s["update_norm"] for s in final]),
            "progressive_update_norms": [round(s["update_norm"], 6) for s in sites if s["stage"] == "progressive"],
        },
        "sites": sites,
        "warnings": warnings,
    }
