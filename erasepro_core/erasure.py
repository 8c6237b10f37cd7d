"""``erase``: a spec resolved into a plan, then five stages — pairs, preservation, progressive, final K/V, report —
per context space (SD has one; FLUX two, its T5 tokens and its pooled CLIP), written into one delta.

Progressive stage, text-encoder layer i (shallow → deep):  Δ_i X_i = β_i (H_anchor,i − H_target,i) on fc2.
Final stage, every cross-attention K/V:  W = W_o + W_o A B  with the method's factors (ErasePro: W X = W_o Y).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from erasepro_core.adapters import Adapter, adapter_for
from erasepro_core.delta import Delta, fingerprint
from erasepro_core.features import PairSet, build_pairs, contains_concept
from erasepro_core.kv import write_kv
from erasepro_core.methods import EditInputs, KVEdit
from erasepro_core.plan import ErasureError, Plan, make_plan
from erasepro_core.prefix import PrefixCache
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
from erasepro_core.progressive import TowerPass, carry_tower
from erasepro_core.report import summary
from erasepro_core.solver import Metric, Moments, in_dspace
from erasepro_core.spec import ErasureSpec

log = logging.getLogger(__name__)
ProgressCallback = Callable[[str, float], None]  # (stage, fraction done in [0, 1])
ExtraContext = tuple[torch.Tensor, torch.Tensor]  # (X_extra, Y_extra), d_ctx × m each
MAX_HELDOUT_EDITS = 16  # held-out leak is measured on (at most) this many edits: a report, not the solve

__all__ = ["ErasureError", "ErasureResult", "ExtraContext", "ProgressCallback", "erase"]


@dataclass
class ErasureResult:
    delta: Delta
    report: dict[str, Any]


class _Steps:
    def __init__(self, fn: ProgressCallback | None, n_steps: int) -> None:
        self.fn, self.n, self.i = fn, max(n_steps, 1), 0

    def __call__(self, stage: str) -> None:
        self.i += 1
        if self.fn is not None:
            self.fn(stage, min(self.i / self.n, 1.0))


@dataclass
class _Job:
    """What the stages share: the pipeline's adapter, the plan, the base's identity and the caches."""

    pipe: Any
    adapter: Adapter
    plan: Plan
    cache: FeatureCache
    base_key: str
    step: _Steps
    timings: dict[str, float]
    warnings: list[str]
    metric_key: str | None = None  # set when the preserve set is the cached generic one (metrics reusable)

    @property
    def device(self) -> torch.device:
        return self.adapter.towers[0].device

    def prefix_cache(self, ti: int) -> PrefixCache:
        """Tower ``ti``'s template-prefix states, kept in the feature cache under the base model's identity (as the
        preserve statistics are) and the tower's device/dtype."""
        tower = self.adapter.towers[ti]
        ident = (self.base_key, ti, str(tower.device), str(tower.dtype))
        return lambda key, build: self.cache.prefix_states((*ident, *key), build)

    def metric(self, site: tuple, stats: SiteStats | None, d_in: int) -> Metric:
        """M = αI + λ C̄ for one site, cached per base model when the preserve set is the generic one."""
        lam, alpha = self.plan.metric_weights()

        def build() -> Metric:
            cov = stats.mean_cov() if stats is not None else None
            return Metric.build(d_in, cov, lam, alpha, device=self.device)

        if self.metric_key is None:
            return build()
        spec = self.plan.spec
        key = (self.metric_key, spec.default_preserve, self.plan.preserve_positions, site, lam, alpha)
        return self.cache.metric(key, build)


def erase(
    pipe: Any,
    spec: ErasureSpec | dict,
    progress: ProgressCallback | None = None,
    cache: FeatureCache | None = None,
    *,
    extra_context: ExtraContext | None = None,
) -> ErasureResult:
    """Compute the erasure ``spec`` describes on ``pipe``; ``pipe`` itself is left unchanged.

    ``extra_context=(X, Y)`` (float tensors, d_ctx × m each, e.g. from
    :func:`erasepro_core.encode.context_features`) adds m columns the final stage constrains like the
    target/anchor pairs: W X = W_o Y (zero residual for ErasePro), under the same preservation.
    """
    if not isinstance(spec, ErasureSpec):
        spec = ErasureSpec.model_validate(spec)
    adapter = adapter_for(pipe)
    extra = _check_extra(extra_context, adapter.context_width, adapter.towers[0].device)
    t0 = time.perf_counter()
    plans = [make_plan(spec, space) for space in adapter.spaces]
    step = _Steps(progress, sum(3 + p.n_progressive + len(s.kv_sites) // 8 + max(len(s.segments) - 1, 0)
                                for s, p in zip(adapter.spaces, plans, strict=True)))
    warnings: list[str] = []
    parts = []
    with torch.no_grad():
        # Each context space (FLUX: T5 tokens, pooled CLIP) is solved on its own; extra columns go to the primary.
        for space, plan in zip(adapter.spaces, plans, strict=True):
            job = _Job(pipe, space, plan, cache or default_cache(), model_key(space), step, {}, warnings)
            if space.segments:  # SD-3: CLIP and T5 tokens one after another, read by one site
                parts.append(_segmented(job, extra if space is adapter else None))
                continue
            pairs, held = _pairs_stage(job)
            pres = _preservation_stage(job)
            passes = _progressive_stage(job, pairs, held, pres)
            parts.append(_final_stage(job, pairs, held, pres, passes, extra if space is adapter else None))
    result = _assemble(pipe, adapter, plans[0], parts, warnings)
    step("done")
    result.report["timings"]["total_s"] = round(time.perf_counter() - t0, 4)
    return result


def _check_extra(extra: ExtraContext | None, width: int, device: torch.device) -> ExtraContext | None:
    if extra is None:
        return None
    x, y = extra
    if x.ndim != 2 or x.shape != y.shape or x.shape[0] != width:
        raise ErasureError(f"extra_context: X and Y must both be {width} × m, got {tuple(x.shape)} and "
                           f"{tuple(y.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ErasureError("extra_context: X and Y must be finite")
    return (x.detach().to(device, torch.float64), y.detach().to(device, torch.float64)) if x.shape[1] else None


def _timed(job: _Job, name: str, t: float) -> None:
    job.timings[name] = time.perf_counter() - t


def _pairs_stage(job: _Job) -> tuple[PairSet, PairSet]:
    """Tokenise every target/anchor prompt and pair their positions (every tower must split them alike)."""
    t = time.perf_counter()
    spec, plan = job.plan.spec, job.plan
    edits = [(e.target, e.anchor) for e in spec.edits]
    tower0 = job.adapter.towers[0]
    tok0, pooled = tower0.tokenizer, tower0.pooled
    bare = plan.inputs.bare_anchors
    try:
        pairs = build_pairs(tok0, edits, spec.templates, plan.token_policy, pooled, bare)
        held = build_pairs(tok0, edits[:MAX_HELDOUT_EDITS], spec.heldout_templates, plan.token_policy, pooled, bare)
        for tower in job.adapter.towers[1:]:
            other = build_pairs(tower.tokenizer, edits, spec.templates, plan.token_policy, tower.pooled, bare)
            if other.positions != pairs.positions:
                raise ErasureError(f"{tower.component}'s tokenizer splits the prompts differently from the first")
    except ValueError as exc:
        raise ErasureError(str(exc)) from exc
    _timed(job, "tokenize_s", t)
    return pairs, held


def _preservation_stage(job: _Job) -> PreserveStats:
    """Generic statistics are cached per base model; the user's prompts and the generic prompts that mention a
    target (dropped) are computed per job and added/subtracted. The method's input rules say whether the
    templates phrase the user's concepts and whether '' joins them (UCE's protocols)."""
    t = time.perf_counter()
    spec, rules = job.plan.spec, job.plan.inputs
    targets = [e.target for e in spec.edits]
    generic = generic_preserve_prompts(job.pipe) if spec.default_preserve else []
    dropped = [p for p in generic if contains_concept(p, targets)]
    phrasings = spec.templates if rules.preserve_templates else ["{}"]
    user = [""] * rules.preserve_empty + [tpl.format(p) for p in spec.preserve for tpl in phrasings]
    user_dropped = [p for p in user if contains_concept(p, targets)]
    if dropped or user_dropped:
        msg = f"dropped {len(dropped) + len(user_dropped)} preserve prompt(s) that mention a target"
        job.warnings.append(msg)
        log.warning(msg)
    user = [p for p in user if p not in user_dropped]
    pres = _combine_stats(job, generic, dropped, user)
    pres.n_prompts = len(generic) - len(dropped) + len(user)
    job.metric_key = job.base_key if not (user or dropped) else None
    job.step("preserve")
    _timed(job, "preserve_s", t)
    return pres


def _combine_stats(job: _Job, generic: list[str], dropped: list[str], user: list[str]) -> PreserveStats:
    adapter, layers, last = job.adapter, job.plan.layers, job.plan.preserve_last_only
    seq = job.plan.preserve_positions == "sequence"
    # UCE 2025 preserves the last subject token of each preserve prompt (un-normalised sums; UCE 2023 every
    # position); ErasePro the last by default (measured: protecting every token also protects the context and
    # EOS features that target prompts share with unrelated ones, and the erasure leaks on complex prompts).
    base = (job.cache.generic_stats(adapter, job.base_key, generic, layers, last_only=last, sequence=seq)
            if generic else None)
    base = base.to(job.device) if base is not None else None  # stored on the host; solved where the model is
    extra = removed = removed_ctx = None
    extra_fc2: dict = {}
    removed_fc2: dict = {}
    if user:
        extra_fc2, ctx = prompt_features(adapter, user, layers, last_only=last, sequence=seq)
        extra = stats_of(ctx)
    if dropped:
        removed_fc2, removed_ctx = prompt_features(adapter, dropped, layers, last_only=last, sequence=seq)
        removed = stats_of(removed_ctx)
    out = PreserveStats()
    if base is None and extra is None:
        return out
    for k in [(t, i) for t, ls in layers.items() for i in ls]:
        src = base.fc2[k] if base is not None else SiteStats.empty(adapter.towers[k[0]].fc2(k[1]).in_features,
                                                                   job.device)
        out.fc2[k] = src.combined(
            stats_of(extra_fc2[k]) if k in extra_fc2 else None,
            stats_of(removed_fc2[k]) if k in removed_fc2 else None,
            removed_fc2.get(k),
        )
    src = base.ctx if base is not None else SiteStats.empty(adapter.context_width, job.device)
    out.ctx = src.combined(extra, removed, removed_ctx)
    return out


def _progressive_stage(job: _Job, pairs: PairSet, held: PairSet, pres: PreserveStats) -> list:
    """One carried pass per tower (it also yields the context columns the final stage constrains)."""
    t = time.perf_counter()
    passes = [carry_tower(ti, tower, job.plan, pairs, held, pres, job.metric, job.step, job.prefix_cache(ti))
              for ti, tower in enumerate(job.adapter.towers)]
    _timed(job, "progressive_s", t)
    return passes


@dataclass
class _SpaceResult:
    """One context space's share of the delta and of the report."""

    sites: list[dict[str, Any]]
    tensors: dict[str, torch.Tensor]
    originals: dict[str, torch.Tensor]
    layers: dict[str, list[int]]  # tower component -> progressive layers
    n_constraints: int
    n_heldout: int
    n_extra: int
    timings: dict[str, float]
    hardening: list[dict[str, Any]] | None = None  # the per-round report, when the method hardens


def _final_stage(job: _Job, pairs: PairSet, held: PairSet, pres: PreserveStats, passes: list,
                 extra: ExtraContext | None) -> _SpaceResult:
    """The method's K/V edit from the context columns, written into every site of the space.
    Towers (SDXL) concatenate along features; their token positions coincide (checked in the pairs stage)."""
    t = time.perf_counter()
    n_total = passes[0].x.shape[1] + (extra[0].shape[1] if extra is not None else 0)
    # Past n = d the methods solve on d × d moments summed in float64 batches (solver.moments): the n × d columns
    # stay in float32 (exact for the encoders' features; extra_context is rounded to it), half the memory.
    dtype = torch.float32 if in_dspace(n_total, sum(p.x.shape[0] for p in passes)) else torch.float64
    x, y = _stacked(passes, "x", dtype), _stacked(passes, "y", dtype)  # the columns now live in x, y only
    xh = torch.cat([p.xh for p in passes]).double() if passes[0].xh is not None else None
    yh = torch.cat([p.yh for p in passes]).double() if passes[0].yh is not None else None
    n_extra = 0
    if extra is not None:
        x, y = torch.cat([x, extra[0].to(x.device, dtype)], 1), torch.cat([y, extra[1].to(y.device, dtype)], 1)
        n_extra = extra[0].shape[1]

    def solve(xs: torch.Tensor, ys: torch.Tensor, summed: Moments | None = None) -> KVEdit:
        inputs = EditInputs(xs, ys, pres.ctx, lambda: job.metric(("ctx",), pres.ctx, xs.shape[0]), pres.n_prompts,
                            summed)
        return job.plan.kv_edit(job.plan.method, inputs)

    rounds = job.plan.method.hardening_rounds()
    hardening = None
    if rounds:  # adversarial hardening: extra columns found by attacking the edit in context space
        from erasepro_core.harden import harden, kv_gram, kv_weights, original_target_columns

        c_t = original_target_columns(job.adapter, job.plan.spec, pairs, x, job.plan.n_progressive > 0)
        hard = harden(solve, x, y, c_t, y[:, : pairs.n_columns], kv_gram(kv_weights(job.adapter), job.base_key),
                      rounds)
        x, y, edit, hardening = hard.x, hard.y, hard.edit, hard.rounds
        n_extra = x.shape[1] - pairs.n_columns
    else:
        edit = solve(x, y)
    job.step("final")
    kv = write_kv(job.adapter, edit, x, y, xh, yh, pres.ctx, job.step, n_extra)
    _timed(job, "final_s", t)
    return _SpaceResult(
        sites=[s for p in passes for s in p.sites] + kv.sites,
        tensors={k: v for p in passes for k, v in p.tensors.items()} | kv.tensors,
        originals={k: v for p in passes for k, v in p.originals.items()} | kv.originals,
        layers={job.adapter.towers[ti].component: ls for ti, ls in job.plan.layers.items()},
        n_constraints=pairs.n_columns, n_heldout=held.n_columns, n_extra=n_extra, timings=job.timings,
        hardening=hardening,
    )


def _stacked(passes: list[TowerPass], key: str, dtype: torch.dtype) -> torch.Tensor:
    """The towers' columns ``key`` (d_i × n each) one above the other (SDXL: 768 + 1280 rows) in ``dtype``, each
    tower's released from its pass as soon as it is copied: at most one tower's columns exist twice, never the
    whole set (3 GB at SDXL's width and 1,000 concepts `to_end`)."""
    if len(passes) == 1:
        out = getattr(passes[0], key).to(dtype)
        setattr(passes[0], key, torch.empty(0))
        return out
    first = getattr(passes[0], key)
    out = first.new_empty(sum(getattr(p, key).shape[0] for p in passes), first.shape[1], dtype=dtype)
    del first
    row = 0
    for p in passes:
        cols = getattr(p, key)
        out[row : row + cols.shape[0]] = cols
        row += cols.shape[0]
        setattr(p, key, torch.empty(0))
        del cols
    return out


def _padded(cols: torch.Tensor | None, width: int) -> torch.Tensor | None:
    """Columns zero-padded at the end of the features to ``width`` rows (a segment as the sites read it)."""
    if cols is None or cols.shape[0] == width:
        return cols
    return torch.cat([cols, cols.new_zeros(width - cols.shape[0], cols.shape[1])])


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """Segments' columns side by side, in the widest dtype among them (float32 stays float32 when all are)."""
    dtype = parts[0].dtype
    for p in parts[1:]:
        dtype = torch.promote_types(dtype, p.dtype)
    return torch.cat([p.to(dtype) for p in parts], 1)


def _padded_stats(stats: SiteStats, width: int) -> SiteStats:
    d = stats.gram.shape[0]
    gram = stats.gram.new_zeros(width, width)
    gram[:d, :d] = stats.gram
    return SiteStats(gram, stats.n, _padded(stats.sample, width))


def _segmented(job: _Job, extra: ExtraContext | None) -> _SpaceResult:
    """A space whose sites read several segments along the sequence (SD-3: CLIP tokens, then T5 tokens). Each
    segment is paired, preserved and carried as a space of its own (its own tokenizer, statistics and progressive
    pass); the final stage then solves once over every segment's columns, zero-padded to the sites' width, under
    the sum of their preserve statistics:  W [X_1; 0 | X_2] = W_o [Y_1; 0 | Y_2]."""
    if job.plan.method.hardening_rounds():
        raise ErasureError("hardening is not available for a segmented context (SD-3) yet")
    width = job.adapter.context_width
    seg_jobs = [_Job(job.pipe, seg, make_plan(job.plan.spec, seg), job.cache, model_key(seg), job.step, {},
                     job.warnings) for seg in job.adapter.segments]
    pair_sets, held_sets, merged = [], [], TowerPass(x=torch.empty(0), y=torch.empty(0), xh=None, yh=None)
    cols: dict[str, list[torch.Tensor]] = {"x": [], "y": [], "xh": [], "yh": []}
    pres = PreserveStats()
    for sj in seg_jobs:
        pairs, held = _pairs_stage(sj)
        seg_pres = _preservation_stage(sj)
        passes = _progressive_stage(sj, pairs, held, seg_pres)
        pair_sets.append(pairs)
        held_sets.append(held)
        for k in cols:
            part = [getattr(p, k) for p in passes]
            if all(c is not None for c in part):  # towers side by side, then padded (the final stage casts)
                cols[k].append(_padded(torch.cat(part) if len(part) > 1 else part[0], width))
        for p in passes:
            merged.sites += p.sites
            merged.tensors |= p.tensors
            merged.originals |= p.originals
        if seg_pres.ctx is not None:
            padded = _padded_stats(seg_pres.ctx, width)
            pres.ctx = padded if pres.ctx is None else pres.ctx.combined(padded, None)
        pres.n_prompts = seg_pres.n_prompts
        for name, v in sj.timings.items():
            job.timings[name] = job.timings.get(name, 0.0) + v
    merged.x, merged.y = _joined(cols["x"]), _joined(cols["y"])
    if cols["xh"] and sum(c.shape[1] for c in cols["xh"]):
        merged.xh, merged.yh = _joined(cols["xh"]), _joined(cols["yh"])
    # The solve's metric is cached under the whole space's identity when every segment used the generic set.
    job.metric_key = job.base_key if all(sj.metric_key is not None for sj in seg_jobs) else None
    pairs = PairSet(positions=[p for ps in pair_sets for p in ps.positions])
    held = PairSet(positions=[p for ps in held_sets for p in ps.positions])
    result = _final_stage(job, pairs, held, pres, [merged], extra)
    result.layers = {sj.adapter.towers[ti].component: ls for sj in seg_jobs for ti, ls in sj.plan.layers.items()}
    return result


def _assemble(pipe: Any, adapter: Adapter, plan: Plan, parts: list[_SpaceResult], warnings: list[str]
              ) -> ErasureResult:
    """One delta and one report from every context space's result."""
    # Weights were kept on the model's device while computing; one move to the host at the end.
    tensors = {k: v.cpu() for p in parts for k, v in p.tensors.items()}
    originals = {k: v.cpu() for p in parts for k, v in p.originals.items()}
    timings: dict[str, float] = {}
    for p in parts:
        for k, v in p.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    report = summary(plan, adapter.family, {c: ls for p in parts for c, ls in p.layers.items()},
                     sum(p.n_constraints for p in parts), sum(p.n_heldout for p in parts),
                     [s for p in parts for s in p.sites], list(dict.fromkeys(warnings)), parts[0].n_extra)
    report["context_width"] = adapter.context_width  # beside n_constraints: the column/width ratio decides the solve
    if parts[0].hardening is not None:  # the primary space's rounds (FLUX's pooled space is hardened alike)
        report["hardening"] = parts[0].hardening
    report["timings"] = {k: round(v, 4) for k, v in timings.items()}
    # what the method defends against under threat models T1 and T2 (docs/method.md, "Threat models")
    report["threat_models"] = dict(type(plan.method).threat_models)
    delta = Delta(
        tensors=tensors,
        fingerprint=fingerprint(originals),
        spec=plan.spec.model_dump(mode="json"),
        report=report,
        base={"family": adapter.family, "dtype": str(next(iter(tensors.values())).dtype).replace("torch.", ""),
              "name_or_path": str(getattr(pipe, "name_or_path", "") or "")},
    )
    return ErasureResult(delta=delta, report=report)
