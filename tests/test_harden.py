"""Closed-form adversarial hardening: each round lowers what the closed-form embedding attack recovers, the
hardening columns hold with zero residual, and the CLI/spec carry ``harden_rounds``."""

from __future__ import annotations

import pytest
import torch

from erasepro_core.erasure import erase
from erasepro_core.harden import closed_form_attack, harden
from erasepro_core.spec import ErasureSpec

SPEC = {"edits": [{"target": "van gogh", "anchor": "art"}], "templates": ["{}", "a photo of {}", "a painting by {}"]}


def test_attack_on_an_unedited_map_recovers_everything():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 8, generator=g, dtype=torch.float64)
    c_t = torch.randn(8, 3, generator=g, dtype=torch.float64)
    found, leak = closed_form_attack(torch.eye(8, dtype=torch.float64), w.T @ w, c_t, ridge=1e-9)
    torch.testing.assert_close(found, c_t, rtol=1e-6, atol=1e-6)
    assert min(leak) > 1 - 1e-6


def test_rounds_lower_the_leak_and_keep_zero_residual(sd_pipe):
    res = [erase(sd_pipe, {**SPEC, "harden_rounds": n}) for n in (0, 3)]
    assert "hardening" not in res[0].report
    rounds = res[1].report["hardening"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    leaks = [r["leak_mean"] for r in rounds]
    assert all(b < a for a, b in zip(leaks, leaks[1:], strict=False)), leaks
    n = res[0].report["n_constraints"]
    assert [r["n_columns"] for r in rounds] == [n, 2 * n, 3 * n, 4 * n]
    assert res[1].report["summary"]["kv_residual"] < 1e-4  # W c' = W_o y for the hardening columns too
    finals = [s for s in res[1].report["sites"] if s["stage"] == "final"]
    assert all(s["extra_residual"] < 1e-4 for s in finals)


def test_harden_validates_rounds():
    with pytest.raises(ValueError, match="harden_rounds"):
        harden(lambda x, y: None, torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1),
               torch.eye(2), 99)
    with pytest.raises(ValueError):
        ErasureSpec.model_validate({**SPEC, "harden_rounds": 99})
    with pytest.raises(ValueError, match="harden_rounds"):
        ErasureSpec.model_validate({**SPEC, "method": "uce", "harden_rounds": 1})


def test_cli_flag_sets_the_rounds():
    from erasepro_core.cli import build_parser, build_spec

    argv = ["erase", "--target", "van gogh", "--anchor", "art", "--harden", "2", "--out", "x.safetensors"]
    assert build_spec(build_parser(argv).parse_args(argv)).method.harden_rounds == 2
