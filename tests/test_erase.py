"""erase() on tiny SD-1.x and SDXL pipelines, checked through the models' own forward passes."""

from __future__ import annotations

import copy

import pytest
import torch
from reference_formulas import uce_weight

from erasepro_core.adapters import adapter_for
from erasepro_core.delta import applied_delta
from erasepro_core.erasure import ErasureError, erase
from erasepro_core.features import build_pairs
from erasepro_core.plan import schedule_fractions
from erasepro_core.spec import ErasureSpec


def _ids(tok, prompts):
    return tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
               return_tensors="pt").input_ids


@torch.no_grad()
def _context(pipe, prompts):
    """The UNet's context for prompts, computed the way the pipeline does it."""
    if getattr(pipe, "text_encoder_2", None) is None:
        return pipe.text_encoder(_ids(pipe.tokenizer, prompts))[0]
    parts = []
    for te, tok in ((pipe.text_encoder, pipe.tokenizer), (pipe.text_encoder_2, pipe.tokenizer_2)):
        parts.append(te(_ids(tok, prompts), output_hidden_states=True).hidden_states[-2])
    return torch.cat(parts, -1)


@torch.no_grad()
def _kv_outputs(pipe, ctx):
    a = adapter_for(pipe)
    return {s.key: s.module(ctx) for s in a.kv_sites}


def _paired(pipe, spec):
    tok = pipe.tokenizer
    pairs = build_pairs(tok, [(e.target, e.anchor) for e in spec.edits], spec.templates,
                        spec.method.pairing_policy())
    tprompts = [spec.templates[i % len(spec.templates)].format(spec.edits[k].target)
                for i, k in enumerate(pairs.concept_of)]
    aprompts = [tok.decode(ids[1:-1]) for ids in pairs.anchor_ids]
    return pairs, tprompts, aprompts


def _check_targets_map_to_anchors(pipe, spec, result, tol):
    pairs, tprompts, aprompts = _paired(pipe, spec)
    anchors = _kv_outputs(pipe, _context(pipe, aprompts))  # the original model on anchor prompts
    with applied_delta(pipe, result.delta):
        edited = _kv_outputs(pipe, _context(pipe, tprompts))
    rt = torch.tensor([p[0] for p in pairs.positions])
    pt = torch.tensor([p[1] for p in pairs.positions])
    ra = torch.tensor([p[2] for p in pairs.positions])
    pa = torch.tensor([p[3] for p in pairs.positions])
    for key in anchors:
        want = anchors[key][ra, pa]
        got = edited[key][rt, pt]
        rel = float((got - want).norm() / want.norm().detach())
        assert rel < tol, (key, rel)


SPEC = dict(edits=[{"target": "van gogh", "anchor": "art"}], templates=["{}", "a photo of {}", "an image of {}"])


@pytest.mark.parametrize("schedule", ["front", "uniform", "none"])
def test_zero_residual_at_every_site_and_targets_become_anchors(sd_pipe, schedule):
    spec = ErasureSpec(**SPEC, schedule=schedule, token_policy="to_eos")
    result = erase(sd_pipe, spec)
    sites = result.report["sites"]
    n_prog = sum(s["stage"] == "progressive" for s in sites)
    assert n_prog == (0 if schedule == "none" else 4)
    assert all(s["residual"] <= 1e-5 for s in sites), [(s["site"], s["residual"]) for s in sites]
    _check_targets_map_to_anchors(sd_pipe, spec, result, tol=1e-4)


def test_several_concepts_each_map_to_their_own_anchor(sd_pipe):
    spec = ErasureSpec(edits=[{"target": "van gogh", "anchor": "art"}, {"target": "snoopy", "anchor": "a dog"},
                              {"target": "nudity", "anchor": ""}], templates=["{}", "a photo of {}"])
    result = erase(sd_pipe, spec)
    assert result.report["n_edits"] == 3
    _check_targets_map_to_anchors(sd_pipe, spec, result, tol=1e-4)


def test_sdxl_edits_both_towers_and_keeps_zero_residual(sdxl_pipe):
    spec = ErasureSpec(**SPEC, schedule="front", token_policy="to_eos")
    result = erase(sdxl_pipe, spec)
    towers = {s["tower"] for s in result.report["sites"] if s["stage"] == "progressive"}
    assert towers == {"text_encoder", "text_encoder_2"}
    assert any(k.startswith("text_encoder_2.") for k in result.delta.tensors)
    _check_targets_map_to_anchors(sdxl_pipe, spec, result, tol=1e-4)


def test_pipe_is_unchanged_by_erase(sd_pipe):
    before = {k: v.clone() for k, v in sd_pipe.text_encoder.state_dict().items()}
    kv_before = {s.key: s.module.weight.clone() for s in adapter_for(sd_pipe).kv_sites}
    erase(sd_pipe, ErasureSpec(**SPEC))
    assert all(torch.equal(before[k], v) for k, v in sd_pipe.text_encoder.state_dict().items())
    assert all(torch.equal(kv_before[s.key], s.module.weight) for s in adapter_for(sd_pipe).kv_sites)


def test_deterministic_bytes(sd_pipe):
    a = erase(sd_pipe, ErasureSpec(**SPEC)).delta
    b = erase(sd_pipe, ErasureSpec(**SPEC)).delta
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert a.fingerprint == b.fingerprint


def _unrelated_drift(pipe, result, prompts, subject_only):
    """Mean relative change of K/V outputs on ``prompts``: whole contexts, or their last token before EOS."""
    before = _kv_outputs(pipe, _context(pipe, prompts))
    with applied_delta(pipe, result.delta):
        after = _kv_outputs(pipe, _context(pipe, prompts))
    if subject_only:
        last = torch.tensor([len(pipe.tokenizer(p).input_ids) - 2 for p in prompts])
        rows = torch.arange(len(prompts))
        before = {k: v[rows, last] for k, v in before.items()}
        after = {k: v[rows, last] for k, v in after.items()}
    return sum(float((after[k] - before[k]).norm() / before[k].norm()) for k in before) / len(before)


@pytest.mark.parametrize("tokens", ["last", "all"])
def test_preserve_set_lowers_drift_on_unrelated_prompts(sd_pipe, tokens):
    spec = dict(edits=[{"target": "van gogh", "anchor": "art"}, {"target": "monet", "anchor": "art"}],
                preserve_tokens=tokens)
    unrelated = ["a photo of a house", "a dog in the rain", "a red car on a street", "an oil painting of a boat"]
    subject = tokens == "last"  # what each mode protects: the subject token, or every position
    with_p = _unrelated_drift(sd_pipe, erase(sd_pipe, ErasureSpec(**spec)), unrelated, subject)
    without = _unrelated_drift(sd_pipe, erase(sd_pipe, ErasureSpec(**spec, default_preserve=False)), unrelated,
                               subject)
    assert with_p < 0.8 * without, (with_p, without)


def test_user_preserve_prompts_mentioning_a_target_are_dropped_with_a_warning(sd_pipe):
    spec = ErasureSpec(edits=[{"target": "cat", "anchor": "animal"}], preserve=["a cat toy", "a dog"])
    result = erase(sd_pipe, spec)
    assert any("dropped" in w for w in result.report["warnings"])


def test_heldout_residual_is_reported_and_exceeds_the_solve_residual(sd_pipe):
    result = erase(sd_pipe, ErasureSpec(**SPEC))
    s = result.report["summary"]
    assert s["kv_heldout_residual"] is not None
    assert s["kv_heldout_residual"] > 100 * s["kv_residual"]


def test_uce_matches_its_published_formula_at_every_site(sd_pipe):
    spec = ErasureSpec(**SPEC, method="uce", default_preserve=False)
    result = erase(sd_pipe, spec)
    pairs, tprompts, aprompts = _paired(sd_pipe, spec)  # UCE pairs last tokens
    ctx_t, ctx_a = _context(sd_pipe, tprompts), _context(sd_pipe, aprompts)
    c = ctx_t[[p[0] for p in pairs.positions], [p[1] for p in pairs.positions]].T
    c_star = ctx_a[[p[2] for p in pairs.positions], [p[3] for p in pairs.positions]].T
    for site in adapter_for(sd_pipe).kv_sites:
        want = uce_weight(site.module.weight, c, c_star, None, lam=0.5)
        got = result.delta.tensors[site.key].double()
        want = want.detach()
        assert float((got - want).norm() / want.norm()) < 1e-5


def test_token_policies_constrain_the_expected_positions(sd_pipe):
    counts = {}
    for policy in ("last", "to_eos", "to_end"):
        spec = ErasureSpec(**SPEC, token_policy=policy, schedule="none")
        counts[policy] = erase(sd_pipe, spec).report["n_constraints"]
    assert counts["last"] == 3  # one per template
    assert counts["last"] < counts["to_eos"] < counts["to_end"]


def test_bfloat16_pipeline_solves_in_float64_and_writes_back_in_bfloat16(sd_pipe):
    pipe = copy.deepcopy(sd_pipe).to(torch.bfloat16)
    result = erase(pipe, ErasureSpec(**SPEC))
    assert {t.dtype for t in result.delta.tensors.values()} == {torch.bfloat16}
    assert result.report["summary"]["kv_residual"] < 0.05  # bf16 rounding of the written weights only


def test_schedules():
    assert schedule_fractions("uniform", 3) == pytest.approx([1 / 4, 1 / 3, 1 / 2])
    front = schedule_fractions("front", 3)  # shares 4:3:2:1 of the initial gap
    assert front == pytest.approx([0.4, 0.5, 2 / 3])


def test_layer_out_of_range_is_a_clear_error(sd_pipe):
    with pytest.raises(ErasureError, match="layers: 7 is out of range"):
        erase(sd_pipe, ErasureSpec(**SPEC, layers=[0, 7], schedule="uniform"))


def test_negative_layers_count_from_the_end(sd_pipe):
    result = erase(sd_pipe, ErasureSpec(**SPEC, layers=[-1], schedule="front"))
    assert result.report["layers"] == {"text_encoder": [3]}


def test_template_that_glues_the_concept_to_a_word_is_a_clear_error(sd_pipe):
    with pytest.raises(ErasureError, match="merges the concept"):
        erase(sd_pipe, ErasureSpec(edits=[{"target": "cat", "anchor": "dog"}], templates=["{}s"]))


def test_progress_reaches_one(sd_pipe):
    seen = []
    erase(sd_pipe, ErasureSpec(**SPEC, schedule="front"), progress=lambda stage, f: seen.append((stage, f)))
    assert seen[-1][1] == 1.0
    assert [f for _, f in seen] == sorted(f for _, f in seen)
    assert {"preserve", "progressive", "final"} <= {s for s, _ in seen}


def test_overdetermined_many_concepts_report_the_residual_they_achieve(sd_pipe):
    # 24 concepts × 2 templates × ≥2 tokens > 64 context dimensions: least squares, not zero residual.
    words = "cat dog horse bird fish car bus train boat house tree flower chair table cup apple book lamp " \
            "guitar piano mountain river lake beach".split()
    spec = ErasureSpec(edits=[{"target": w, "anchor": "thing"} for w in words], templates=["{}", "a photo of {}"],
                       schedule="none", token_policy="to_eos", default_preserve=False)
    result = erase(sd_pipe, spec)
    assert result.report["n_constraints"] > 64
    pairs, tprompts, aprompts = _paired(sd_pipe, spec)
    anchors = _kv_outputs(sd_pipe, _context(sd_pipe, aprompts))
    before = _kv_outputs(sd_pipe, _context(sd_pipe, tprompts))
    with applied_delta(sd_pipe, result.delta):
        edited = _kv_outputs(sd_pipe, _context(sd_pipe, tprompts))
    idx_t = ([p[0] for p in pairs.positions], [p[1] for p in pairs.positions])
    idx_a = ([p[2] for p in pairs.positions], [p[3] for p in pairs.positions])
    for site in result.report["sites"]:
        key = site["site"]
        want = anchors[key][idx_a]
        measured = float((edited[key][idx_t] - want).norm() / want.norm())
        untouched = float((before[key][idx_t] - want).norm() / want.norm())
        assert site["residual"] == pytest.approx(measured, rel=1e-3, abs=1e-6)
        assert 1e-3 < measured < untouched


def test_dropped_preserve_prompts_leave_the_statistics_and_the_drift_sample():
    from erasepro_core.preserve import stats_of

    g = torch.Generator().manual_seed(0)
    kept, dropped = torch.randn(8, 30, generator=g), torch.randn(8, 5, generator=g)
    both = stats_of(torch.cat([kept, dropped], 1))
    out = both.combined(None, stats_of(dropped + 1e-7), dropped + 1e-7)  # same prompts, float noise
    assert out.n == 30
    assert torch.allclose(out.gram, stats_of(kept).gram, atol=1e-5)
    assert out.sample.shape[1] == 30
    assert torch.cdist(out.sample.T, dropped.T).min() > 1e-3


@pytest.mark.parametrize("pipe_name", ["sd_pipe", "sdxl_pipe"])
def test_context_features_are_what_the_pipeline_feeds_the_unet(request, pipe_name):
    from erasepro_core.encode import context_features

    pipe = request.getfixturevalue(pipe_name)
    prompts = ["a photo of van gogh", "snoopy"]
    ctx = _context(pipe, prompts)  # the pipeline's own encoding, padded to 77
    positions = [[0, 3, 4, 10], [2, 76]]
    got = context_features(pipe, prompts, positions)
    want = torch.cat([ctx[0, positions[0]].T, ctx[1, positions[1]].T], 1)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)
    last = context_features(pipe, prompts)  # default: each prompt's last token before EOS
    ends = [len(pipe.tokenizer(p).input_ids) - 2 for p in prompts]
    assert torch.allclose(last, torch.stack([ctx[0, ends[0]], ctx[1, ends[1]]], 1), atol=1e-5)


@pytest.mark.parametrize("method", ["erasepro", "uce"])
def test_extra_context_columns_are_constrained_like_the_pairs(sd_pipe, method):
    from erasepro_core.encode import context_features

    x_extra = context_features(sd_pipe, ["a starry night by vincent", "sunflowers, oil on canvas"], [[3, 5], [1, 4]])
    y_extra = context_features(sd_pipe, ["a night", "flowers"], [[2, 2], [1, 1]])
    spec = ErasureSpec(**SPEC, method=method)
    result = erase(sd_pipe, spec, extra_context=(x_extra, y_extra))
    summary = result.report["summary"]
    assert result.report["n_extra_constraints"] == 4
    for site in adapter_for(sd_pipe).kv_sites:
        w_o = site.module.weight.detach().double()
        w = result.delta.tensors[site.key].double()
        moved = float((w @ x_extra.double() - w_o @ y_extra.double()).norm() / (w_o @ y_extra.double()).norm())
        before = float((w_o @ (x_extra - y_extra).double()).norm() / (w_o @ y_extra.double()).norm())
        if method == "erasepro":  # zero residual on the extra columns, as on the pairs
            assert moved < 1e-5, (site.key, moved)
        else:  # UCE's least squares moves them towards Y, not onto it
            assert moved < before
    if method == "erasepro":
        assert summary["kv_extra_residual"] < 1e-5 and summary["kv_residual"] < 1e-5
    plain = erase(sd_pipe, spec)
    assert plain.report["n_constraints"] == result.report["n_constraints"]
    assert "kv_extra_residual" not in plain.report["summary"]


def test_extra_context_of_the_wrong_shape_is_refused(sd_pipe):
    x = torch.zeros(7, 2)
    with pytest.raises(ErasureError, match="extra_context"):
        erase(sd_pipe, ErasureSpec(**SPEC), extra_context=(x, x))


def test_report_measures_a_bounded_sample_of_columns_and_every_extra_one():
    from erasepro_core.kv import MAX_REPORT_COLUMNS, report_columns

    assert report_columns(10, 2).tolist() == list(range(12))
    cols = report_columns(5000, 3)
    assert len(cols) == MAX_REPORT_COLUMNS + 3 and cols[0] == 0 and cols[MAX_REPORT_COLUMNS - 1] == 4999
    assert cols[-3:].tolist() == [5000, 5001, 5002] and len(set(cols.tolist())) == len(cols)


@pytest.mark.parametrize("n_edits", [1, 8])  # 3 columns: W_o A B as two thin products; 40 ≥ 64/2: P formed
def test_kv_report_fields_are_what_the_written_weights_give(sd_pipe, n_edits):
    from erasepro_core.encode import prompt_features
    from erasepro_core.stats import stats_of

    words = "cat dog horse bird fish car bus train".split()[:n_edits]
    templates = ["{}", "a photo of {}", "an image of {}"] + (["a picture of {}", "a rendering of {}"] if n_edits > 1
                                                             else [])
    spec = ErasureSpec(edits=[{"target": w, "anchor": "thing"} for w in words], templates=templates,
                       default_preserve=False, preserve=["tree", "river", "lamp"])
    result = erase(sd_pipe, spec)
    adapter = adapter_for(sd_pipe)
    prompts = [t.format(p) for p in spec.preserve for t in spec.templates]
    sample = stats_of(prompt_features(adapter, prompts, {}, last_only=True)[1]).sample.double()
    sites = {s["site"]: s for s in result.report["sites"]}
    for kv in adapter.kv_sites:
        w_o = kv.module.weight.detach().double()
        change = result.delta.tensors[kv.key].double() - w_o
        site = sites[kv.key]
        assert site["update_norm"] == pytest.approx(float(change.norm() / w_o.norm()), rel=1e-4)
        drift = float((change @ sample).norm() / (w_o @ sample).norm())
        assert site["preserve_drift"] == pytest.approx(drift, rel=1e-3)


def test_short_suffixes_padded_into_one_group_keep_the_pipelines_features(sd_pipe, monkeypatch):
    import erasepro_core.prefix as prefix
    from erasepro_core.features import prompt_ids

    tower = adapter_for(sd_pipe).towers[0]
    prompts = ["a photo of van gogh", "a photo of art", "a photo of a small red house", "snoopy"]
    rows = [prompt_ids(tower.tokenizer, p) for p in prompts]
    shared = [4, 4, 4, 1]  # BOS + "a photo of"; BOS
    refs = [(r, q) for r, ids in enumerate(rows) for q in range(len(ids))]
    want = torch.cat([_context(sd_pipe, [p])[0, : len(ids)] for p, ids in zip(prompts, rows, strict=True)])
    groups = {}
    for budget in (0, 64):
        monkeypatch.setattr(prefix, "MERGE_PAD_TOKENS", budget)
        batch = prefix.batch_for(tower, rows, shared, refs)
        groups[budget] = len(batch.suffixes)
        with torch.no_grad():
            flat = prefix.PrefixBatch.flat([tower.to_context(h) for h in batch.encode(tower)])
        got = flat[batch.index([r for r, _ in refs], [q for _, q in refs])]
        assert torch.allclose(got, want, atol=1e-5), budget
    assert groups[0] > 1 and groups[64] == 1


def test_cached_template_prefixes_give_the_same_bytes_and_follow_the_model(sd_pipe):
    from erasepro_core.preserve import FeatureCache
    from erasepro_core.tiny import tiny_sd_pipeline

    spec = ErasureSpec(**SPEC)
    other = ErasureSpec(**{**SPEC, "edits": [{"target": "snoopy", "anchor": "a dog"}]})
    fresh = erase(sd_pipe, spec, cache=FeatureCache(store=None)).delta
    cache = FeatureCache(store=None)
    erase(sd_pipe, other, cache=cache)  # fills the cache with the same templates' prefixes
    assert len(cache._prefixes) == 1
    warm = erase(sd_pipe, spec, cache=cache).delta
    assert all(torch.equal(fresh.tensors[k], warm.tensors[k]) for k in fresh.tensors)
    assert len(cache._prefixes) == 1  # served from the cache, not built again
    second = tiny_sd_pipeline(seed=1)  # another base: its own prefixes, never the first one's
    alone = erase(second, spec, cache=FeatureCache(store=None)).delta
    shared = erase(second, spec, cache=cache).delta
    assert len(cache._prefixes) == 2
    assert all(torch.equal(alone.tensors[k], shared.tensors[k]) for k in alone.tensors)
