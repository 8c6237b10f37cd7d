"""UCE's protocols against literal re-derivations of the authors' two scripts (tests/uce_reference.py), on a tiny
SD-1.x pipeline: every K/V site within 1e-4 of the edit."""

from __future__ import annotations

import pytest
import torch
from uce_reference import edit_gap, uce2023, uce2025

from erasepro_core.erasure import erase
from erasepro_core.methods.uce import UCE_OBJECT_TEMPLATES
from erasepro_core.spec import ErasureSpec

TOL = 1e-4


def _ours(pipe, edits, preserve, **settings):
    spec = ErasureSpec.model_validate({"edits": [{"target": t, "anchor": a} for t, a in edits],
                                       "preserve": preserve, "method": "uce", **settings})
    return erase(pipe, spec)


def _assert_parity(pipe, result, want):
    gaps = edit_gap(result.delta.tensors, want, pipe)
    assert len(gaps) == len(result.delta.tensors) > 0
    worst = max(gaps.values())
    assert worst < TOL, gaps
    # and the edit is not trivially small: the sites really moved
    for key, w in want.items():
        w_o = dict(pipe.unet.named_parameters())[key.removeprefix("unet.")].detach().double()
        assert float((w - w_o).norm() / w_o.norm()) > 1e-3, key


CASES = {
    "one concept": ([("van gogh", "art")], []),
    "several concepts, named preserve": ([("van gogh", "art"), ("cat", "dog"), ("snoopy", "cartoon")],
                                         ["a tree", "claude monet", "mickey"]),
    "empty guide": ([("cat", "")], ["dog"]),
    "different token lengths": ([("vincent van gogh", "art"), ("cat", "a small furry dog")], ["the eiffel tower"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_uce2025_equals_the_current_script(sd_pipe, case):
    edits, preserve = CASES[case]
    result = _ours(sd_pipe, edits, preserve)  # no settings: the 2025 defaults
    assert result.report["protocol"] == "uce2025"
    want = uce2025(sd_pipe, [t for t, _ in edits], [a for _, a in edits], preserve)
    _assert_parity(sd_pipe, result, want)


@pytest.mark.parametrize("case", list(CASES))
def test_uce2023_equals_the_paper_era_script(sd_pipe, case):
    edits, preserve = CASES[case]
    result = _ours(sd_pipe, edits, preserve, uce_protocol="uce2023")
    want = uce2023(sd_pipe, [t for t, _ in edits], [a for _, a in edits], preserve)
    _assert_parity(sd_pipe, result, want)


def test_expanded_prompts_and_given_scales_follow_each_script(sd_pipe):
    edits, preserve = [("cat", "dog"), ("van gogh", "")], ["a tree"]
    t, a = [e[0] for e in edits], [e[1] for e in edits]
    tpl = list(UCE_OBJECT_TEMPLATES)
    got = _ours(sd_pipe, edits, preserve, templates=tpl, uce_lambda=0.2, uce_erase_scale=2.0, uce_preserve_scale=3.0)
    _assert_parity(sd_pipe, got, uce2025(sd_pipe, t, a, preserve, lam=0.2, erase_scale=2.0, preserve_scale=3.0,
                                         templates=tpl))
    got = _ours(sd_pipe, edits, preserve, uce_protocol="uce2023", templates=tpl, uce_preserve_scale=0.7)
    _assert_parity(sd_pipe, got, uce2023(sd_pipe, t, a, preserve, preserve_scale=0.7, templates=tpl))


def test_the_protocols_really_differ(sd_pipe):
    """Guard against a re-derivation that cannot tell the protocols apart."""
    edits, preserve = CASES["several concepts, named preserve"]
    t, a = [e[0] for e in edits], [e[1] for e in edits]
    new, old = uce2025(sd_pipe, t, a, preserve), uce2023(sd_pipe, t, a, preserve)
    assert min(edit_gap(new, old, sd_pipe).values()) > 0.05
    custom = _ours(sd_pipe, edits, preserve, uce_protocol="custom")  # templates on everything + generic set
    assert min(edit_gap(custom.delta.tensors, new, sd_pipe).values()) > 0.05


def test_custom_is_the_former_behaviour_and_takes_its_pieces(sd_pipe):
    spec = ErasureSpec.model_validate({"edits": [{"target": "cat", "anchor": "dog"}], "method": "uce",
                                       "uce_protocol": "custom", "uce_token_span": "to_end",
                                       "uce_preserve_tokens": "sequence", "uce_preserve_norm": "count"})
    assert spec.default_preserve is True and len(spec.templates) == 5
    rep = erase(sd_pipe, spec).report
    assert rep["token_policy"] == "to_end" and rep["preserve_tokens"] == "sequence"
    assert rep["n_constraints"] > 5 * 10  # every phrasing, on through the padding


@pytest.mark.parametrize(("settings", "field"), [
    ({"uce_token_span": "to_end"}, "uce_token_span"),
    ({"uce_protocol": "uce2023", "uce_token_span": "last"}, "uce_token_span"),
    ({"uce_preserve_tokens": "all"}, "uce_preserve_tokens"),
    ({"uce_protocol": "uce2023", "uce_preserve_norm": "none"}, "uce_preserve_norm"),
    ({"default_preserve": True}, "default_preserve"),
    ({"uce_protocol": "uce2023", "default_preserve": True}, "default_preserve"),
])
def test_a_setting_the_protocol_fixes_otherwise_is_refused_by_name(settings, field):
    from pydantic import ValidationError

    from erasepro_core.spec import wire_errors

    with pytest.raises(ValidationError) as exc:
        ErasureSpec.model_validate({"edits": [{"target": "cat"}], "method": "uce", **settings})
    err = wire_errors(exc.value)[0]
    assert err["loc"] == (field,) and "custom" in err["msg"]
    # the same value as the protocol's is accepted (a spec written back reads back)
    spec = ErasureSpec.model_validate({"edits": [{"target": "cat"}], "method": "uce",
                                       "uce_protocol": settings.get("uce_protocol", "uce2025")})
    assert ErasureSpec.model_validate(spec.model_dump()).method == spec.method


def test_plain_uce_is_the_2025_defaults_and_round_trips():
    spec = ErasureSpec.model_validate({"edits": [{"target": "cat"}], "method": "uce"})
    m = spec.method
    assert (m.protocol, m.lam, m.erase_scale, m.token_span, m.preserve_tokens) == ("uce2025", 0.5, 1.0, "last", "last")
    assert m.preserve_scale_for(7) == 1.0 and spec.templates == ["{}"] and spec.default_preserve is False
    wire = spec.model_dump()
    assert ErasureSpec.model_validate(wire).model_dump() == wire
    old = ErasureSpec.model_validate({**wire, "uce_protocol": "uce2023", "uce_token_span": None,
                                      "uce_preserve_tokens": None, "uce_preserve_norm": None})
    assert old.method.preserve_scale_for(4) == 0.25 and old.method.preserve_scale_for(20) == 0.1


def test_uce2023_on_sdxl_runs_with_both_towers(sdxl_pipe):
    spec = ErasureSpec.model_validate({"edits": [{"target": "cat", "anchor": "a dog"}], "preserve": ["a tree"],
                                       "method": "uce", "uce_protocol": "uce2023"})
    rep = erase(sdxl_pipe, spec).report
    assert rep["n_constraints"] == 77 - 2  # 'cat' ends at 1, 'a dog' at 2: 77 − 2 pairs
    assert all(torch.isfinite(torch.tensor(s["residual"])) for s in rep["sites"])
