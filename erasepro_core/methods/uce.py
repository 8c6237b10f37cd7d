"""UCE (Gandikota et al., 2024), the baseline: a ridge-regularised least-squares K/V edit.

W = W_o Q,  Q = I + s_e (c* − c) cᵀ K⁻¹,  K = λI + s_e c cᵀ + s_p Σ c_p c_pᵀ  (UCE's own closed form, refactored).

The formula is the same in every version of the authors' code; what differs is the *protocol*, i.e. which
columns c, c* and c_p the formula is given (repository ``rohitgandikota/unified-concept-editing``):

* ``uce2025`` (default) — ``trainscripts/uce_sd_erase.py``: the last word token of the bare concept paired with
  the guide's last word token (BOS for an empty guide); the last word token of each *named* preserve concept,
  no generic set; templates only when asked (their ``--expand_prompts``), on erase and guide prompts only;
  λ = 0.5, s_e = s_p = 1.
* ``uce2023`` — the paper-era ``train-scripts/train_erase.py``: the last word token paired with the bare
  guide's last word token and on through EOS and every padding token (both sequences cut to the same length);
  ``''`` and each named preserve concept at every position of the padded sequence; s_p = max(0.1, 1/N) over
  those N prompts unless given; λ = 0.5, s_e = 1.
* ``custom`` — this library's inputs before the protocols existed: the spec's templates on targets, anchors
  and preserve concepts, plus the generic preserve set; each piece below may be chosen.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from erasepro_core.methods.base import EditInputs, InputRules, KVEdit, MethodConfig, PreservePositions, TokenPolicy

Protocol = Literal["uce2025", "uce2023", "custom"]
PreserveNorm = Literal["none", "count"]

# The authors' --expand_prompts phrasings (uce_sd_erase.py, concept_type "object" / "art"), bare concept first.
UCE_OBJECT_TEMPLATES: tuple[str, ...] = ("{}", "image of {}", "photo of {}", "portrait of {}", "picture of {}",
                                         "painting of {}")
UCE_ART_TEMPLATES: tuple[str, ...] = ("{}", "painting by {}", "art by {}", "artwork by {}", "picture by {}",
                                      "style of {}")

# Each protocol's pieces (the settings below) and input rules; ``custom`` lets the pieces be chosen.
PIECES: dict[str, dict[str, str]] = {
    "uce2025": {"token_span": "last", "preserve_tokens": "last", "preserve_norm": "none"},
    "uce2023": {"token_span": "to_end", "preserve_tokens": "sequence", "preserve_norm": "count"},
    "custom": {"token_span": "last", "preserve_tokens": "last", "preserve_norm": "none"},
}
RULES: dict[str, InputRules] = {
    "uce2025": InputRules(templates=("{}",), generic_preserve=False, generic_preserve_allowed=False,
                          preserve_templates=False, who="UCE protocol 'uce2025'"),
    "uce2023": InputRules(templates=("{}",), generic_preserve=False, generic_preserve_allowed=False,
                          preserve_templates=False, bare_anchors=True, preserve_empty=True,
                          who="UCE protocol 'uce2023'"),
    "custom": InputRules(who="UCE protocol 'custom'"),
}


def count_scale(n_prompts: int) -> float:
    """UCE 2023's default preserve scale: s_p = max(0.1, 1/N) over the N preserve prompts ('' included)."""
    return max(0.1, 1.0 / n_prompts) if n_prompts else 1.0


class UCEConfig(MethodConfig):
    """UCE's protocol (``uce2025`` | ``uce2023`` | ``custom``), λ (``lam``, flat name ``uce_lambda``), the
    erase/preserve scales s_e, s_p, and the protocol's pieces: ``token_span``, ``preserve_tokens``,
    ``preserve_norm`` (left out: the protocol's; another value needs ``protocol="custom"``)."""

    flat_prefix: ClassVar[str] = "uce_"
    threat_models: ClassVar[dict[str, str]] = {
        "T1": "uce2023 on one canvas style: pooled T1 attack success 0.48 (unedited 0.55; uce2025 0.59); one character "
              "0.17 (unedited 0.71) at 0.78 of other characters and 0.74 of objects (unedited 0.93, 0.95)",
        "T2": "no: one canvas style: closed form 0.96, concept direction 1.00, 24 soft-token steps 1.00"}

    name: Literal["uce"] = "uce"
    protocol: Protocol = Field(default="uce2025", description="UCE baseline: which of the authors' protocols gives "
                               "the formula its inputs: 'uce2025' (their current script, the default), 'uce2023' "
                               "(the paper-era script) or 'custom' (choose the pieces).")
    lam: float = Field(default=0.5, gt=0, le=1e6, allow_inf_nan=False, alias="lambda",
                       description="UCE baseline: its λ (the ridge of K = λI + …).")
    erase_scale: float = Field(default=1.0, ge=0, le=1e6, allow_inf_nan=False,
                               description="UCE baseline: the erase scale s_e.")
    preserve_scale: float | None = Field(default=None, ge=0, le=1e6, allow_inf_nan=False,
                                         description="UCE baseline: the preserve scale s_p (left out: 1, or "
                                         "max(0.1, 1/N) over N preserve prompts when uce_preserve_norm is "
                                         "'count', as in uce2023).")
    token_span: TokenPolicy | None = Field(default=None, description="UCE baseline: which target tokens are "
                                           "edited: 'last' (the concept's last word token; uce2025), 'to_eos' or "
                                           "'to_end' (on through EOS and every padding token; uce2023). Left out: "
                                           "the protocol's; another value needs uce_protocol 'custom'.")
    preserve_tokens: PreservePositions | None = Field(default=None, description="UCE baseline: which positions of "
                                                      "each preserve prompt are kept: 'last' (uce2025), 'all' "
                                                      "(tokens through EOS and a few pads) or 'sequence' (every "
                                                      "position, BOS and pads too; uce2023). Left out: the "
                                                      "protocol's; another value needs uce_protocol 'custom'.")
    preserve_norm: PreserveNorm | None = Field(default=None, description="UCE baseline: the default of s_p: "
                                               "'none' (1; uce2025) or 'count' (max(0.1, 1/N); uce2023). Left "
                                               "out: the protocol's; another value needs uce_protocol 'custom'.")

    @model_validator(mode="before")
    @classmethod
    def _protocol_pieces(cls, data: Any) -> Any:
        """Fill the pieces left out from the protocol; a named protocol refuses a piece of another value."""
        if not isinstance(data, dict):
            return data
        protocol = data.get("protocol", "uce2025")
        if protocol not in PIECES:
            return data  # the field's own validation names it
        data = dict(data)
        for piece, value in PIECES[protocol].items():
            given = data.get(piece)
            if given is None:
                data[piece] = value
            elif protocol != "custom" and given != value:
                raise ValueError(f"uce_{piece}: protocol {protocol!r} uses {value!r}, not {given!r}; "
                                 f"set uce_protocol to 'custom' to choose it")
        return data

    def pairing_policy(self) -> TokenPolicy:
        return self.token_span or "last"

    def preserves_last_token_only(self) -> bool:
        return self.preserve_tokens in (None, "last")

    def preserve_positions(self) -> PreservePositions:
        return self.preserve_tokens or "last"

    def input_rules(self) -> InputRules:
        return RULES[self.protocol]

    def preserve_scale_for(self, n_prompts: int) -> float:
        """s_p: the given scale, else max(0.1, 1/N) under ``preserve_norm="count"``, else 1."""
        if self.preserve_scale is not None:
            return self.preserve_scale
        return count_scale(n_prompts) if self.preserve_norm == "count" else 1.0

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "protocol": self.protocol}


def kv_edit(config: UCEConfig, inputs: EditInputs) -> KVEdit:
    """A = s_e (c* − c), B = cᵀ K⁻¹ (un-normalised preserve sums, as UCE's code)."""
    import torch

    from erasepro_core.solver import gram_rank, in_dspace, moments, summed_for

    c, c_star, pres = inputs.x, inputs.y, inputs.preserve
    d, n = c.shape
    # Past n = d: c cᵀ and (c* − c) cᵀ summed in batches (or kept summed by the caller), P = s_e (c* − c) cᵀ K⁻¹
    # formed as two d × d factors.
    if not in_dspace(n, d):
        s, t = c @ c.T, None
    else:
        s, t = inputs.summed.pair() if summed_for(inputs.summed, n) else moments(c, c_star, subtract_x=True)
    k = config.lam * torch.eye(d, dtype=torch.float64, device=c.device) + config.erase_scale * s
    if pres is not None and pres.n:
        k += config.preserve_scale_for(inputs.n_preserve_prompts) * pres.gram
    if t is not None:
        return KVEdit(config.erase_scale * t, torch.linalg.inv(k), gram_rank(s, n))
    b = torch.linalg.solve(k, c).T  # cᵀ K⁻¹ (K symmetric)
    return KVEdit(config.erase_scale * (c_star - c), b, int(torch.linalg.matrix_rank(c)))
