"""ErasePro: zero-residual K/V edit, optionally preceded by the progressive text-encoder stage.

Final stage:  W = W_o + W_o P,  P = (Y − X) G,  G = (Xᵀ M⁻¹ X)⁺ Xᵀ M⁻¹,  so  W X = W_o Y  exactly
(least-norm least squares past d columns, solved on d × d moments: :func:`erasepro_core.solver.dspace_map`).
From n ≥ ρ·d columns on (``exact_below`` ρ), the soft residual  G = (Xᵀ M⁻¹ X + εI)⁻¹ Xᵀ M⁻¹,  ε = τ·tr(XᵀM⁻¹X)/n.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from erasepro_core.methods.base import EditInputs, KVEdit, MethodConfig, PreserveTokens, Schedule, TokenPolicy

# Below this the ridge no longer keeps M = αI + λC positive definite in float64 (Cholesky fails when C is
# singular, e.g. a small preserve set): measured, ridge=5e-324 crashed the solve.
MIN_RIDGE = 1e-8


class EraseProConfig(MethodConfig):
    """``schedule``: progressive stage (``none`` = K/V only, the measured default; ``front``/``uniform``).
    ``layers``: its text-encoder layers (None = method default; negative = from the last).
    ``token_policy``: which target tokens are constrained (``last`` | ``to_eos`` | ``to_end``).
    ``preserve_tokens``: ``last`` (each preserve prompt's last token before EOS) or ``all``.
    ``preserve_weight`` λ and ``ridge`` α (relative to tr(C̄)/d) of  min λ‖Δ C_p‖² + α‖Δ‖²  s.t.  Δ X = R.
    ``residual_ridge`` τ, ``exact_below`` ρ: from n/d ≥ ρ columns per context width on, the constraint is made
    soft (see :mod:`erasepro_core.solver`; measured on canvas, docs/method.md); τ = 0 keeps it always exact.
    ``harden_rounds``: closed-form adversarial hardening rounds of the K/V edit (erasepro_core.harden)."""

    cli_aliases: ClassVar[dict[str, str]] = {"token_policy": "--tokens", "harden_rounds": "--harden"}
    threat_models: ClassVar[dict[str, str]] = {
        "T1": "partly: one canvas style's pooled T1 attack success 0.20 (unedited 0.55, UCE's rows 0.47-0.59), "
              "held-out phrasings leak most (0.45); one character 0.53 (unedited 0.71): the 'last'-token default does "
              "not erase characters ('to_eos', the characters preset: 0.24 vs UCE 2023's 0.17)",
        "T2": "no: any K/V edit W = W_o·Q is undone by a context-space attack (one canvas style: closed form 1.00, "
              "concept direction 0.88, 24 soft-token steps 0.83)"}

    name: Literal["erasepro"] = "erasepro"
    schedule: Schedule = Field(default="none", description="The progressive text-encoder stage: 'none' (K/V edit "
                               "only, the measured default), 'front' or 'uniform' (how it spreads over layers).")
    layers: list[int] | None = Field(default=None, max_length=128, description="Text-encoder layers of the "
                                     "progressive stage (empty = the method default; negative = from the last).")
    token_policy: TokenPolicy = Field(default="last", description="Which target tokens are constrained: 'last' "
                                      "(the concept's last token), 'to_eos' (through EOS) or 'to_end' (all).")
    preserve_tokens: PreserveTokens = Field(default="last", description="Which tokens of each preserve prompt are "
                                            "protected: 'last' (its subject, before EOS) or 'all'.")
    preserve_weight: float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False, description="λ in min "
                                   "λ‖Δ C_p‖² + α‖Δ‖² s.t. Δ X = R: how firmly preserved concepts are held.")
    ridge: float = Field(default=1e-2, ge=MIN_RIDGE, le=1e6, allow_inf_nan=False,
                         description="α in the same objective (relative to tr(C̄)/d): keeps the update small.")
    residual_ridge: float = Field(default=3.0, ge=0, le=1e6, allow_inf_nan=False, description="τ of the soft "
                                  "residual, used from `exact_below` on: min ‖Δ‖²_M + ‖Δ X − R‖²/ε with "
                                  "ε = τ·tr(XᵀM⁻¹X)/n, so many near-collinear targets no longer force a large "
                                  "edit (0 = always zero residual, W X = W_o Y exactly).")
    exact_below: float = Field(default=0.25, ge=0, le=1e6, allow_inf_nan=False, description="Constrained columns "
                               "over the context width below which the solve stays exact (zero residual); from "
                               "there on it is the soft residual of `residual_ridge`.")
    harden_rounds: int = Field(default=0, ge=0, le=8, description="Closed-form adversarial hardening rounds: each "
                               "attacks the K/V edit in context space and constrains what it found to the anchor "
                               "(opt-in: measured to lower closed-form attacks but not soft-token ones).")

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("layers must not repeat")
        if v is not None and any(abs(i) > 10_000 for i in v):
            raise ValueError("layers must be text-encoder layer indices")
        return v

    @model_validator(mode="after")
    def _layers_need_progressive(self) -> EraseProConfig:
        if self.layers is not None and self.schedule == "none":
            raise ValueError("layers: only the progressive stage uses them; set schedule to 'front' or 'uniform'")
        return self

    def pairing_policy(self) -> TokenPolicy:
        return self.token_policy

    def preserves_last_token_only(self) -> bool:
        return self.preserve_tokens == "last"

    def progressive_stage(self) -> tuple[Schedule, list[int] | None]:
        return self.schedule, self.layers

    def hardening_rounds(self) -> int:
        return self.harden_rounds

    def solver_weights(self) -> tuple[float, float]:
        return self.preserve_weight, self.ridge


def kv_edit(config: EraseProConfig, inputs: EditInputs) -> KVEdit:
    """A = Y − X, B = G: the zero-residual map under the preserve metric (A B = P from d × d moments past n = d)."""
    from erasepro_core.solver import zero_residual_factors

    d, n = inputs.x.shape
    # Few columns: exact, as the paper has it. Nearer the width, forcing every column exactly onto its anchor
    # moves the whole neighbourhood (canvas: 10 styles = 0.39 of the width already destroyed the model).
    soft = config.residual_ridge if n >= config.exact_below * d else 0.0
    a, b, rank = zero_residual_factors(inputs.x, inputs.y, inputs.metric(), subtract_x=True, gram_ridge=soft,
                                       summed=inputs.summed)
    return KVEdit(a, b, rank)
