"""What every erasure method provides: a pydantic config (torch-free) and one function that turns the
constrained context features into the K/V edit.

The K/V edit is ``W = W_o + W_o A B`` at every cross-attention K/V site, with ``A`` (d × r) and ``B`` (r × d)
shared by all sites: a method returns the factors, the final stage writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch

    from erasepro_core.solver import Metric, Moments
    from erasepro_core.stats import SiteStats

Schedule = Literal["uniform", "front", "none"]
TokenPolicy = Literal["last", "to_eos", "to_end"]
PreserveTokens = Literal["last", "all"]
# Which positions of a preserve prompt are protected: its last token before EOS, tokens 1..EOS plus a few pads
# (``all``), or every position of the padded sequence, BOS and all pads included (``sequence``: UCE 2023).
PreservePositions = Literal["last", "all", "sequence"]


@dataclass(frozen=True)
class InputRules:
    """Which prompts a method's edit is given, beside the spec's concepts: the defaults of the spec's
    ``templates``/``default_preserve`` when it leaves them out, and how templates and preserve prompts are used."""

    templates: tuple[str, ...] | None = None  # the spec's phrasings when it gives none (None: DEFAULT_TEMPLATES)
    generic_preserve: bool = True  # default of ``default_preserve``
    generic_preserve_allowed: bool = True  # False: ``default_preserve=True`` is refused
    preserve_templates: bool = True  # the templates phrase the preserve concepts too (else: bare concepts)
    bare_anchors: bool = False  # every templated target prompt is paired with the bare anchor
    preserve_empty: bool = False  # the empty prompt '' joins the preserve prompts
    who: str = ""  # names the rule-maker in errors ("UCE protocol 'uce2025'")


class MethodConfig(BaseModel):
    """Settings of one method. ``name`` is the discriminator; the plan reads the properties below."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_by_name=True, validate_by_alias=True)

    name: str

    # Flat (wire) names of this method's settings are ``flat_prefix + field name`` (see spec.ErasureSpec); the CLI
    # flag of each is ``--wire-name``, plus any older spelling named in ``cli_aliases`` (field -> flag).
    flat_prefix: ClassVar[str] = ""
    cli_aliases: ClassVar[dict[str, str]] = {}
    # What the method defends against under each threat model (docs/method.md, "Threat models"), in one measured
    # sentence each; the threat-model evaluation's report repeats it beside its own numbers.
    threat_models: ClassVar[dict[str, str]] = {"T1": "not measured", "T2": "not measured"}

    def pairing_policy(self) -> TokenPolicy:
        """Which target tokens are paired with anchor tokens."""
        return "last"

    def preserves_last_token_only(self) -> bool:
        """Whether each preserve prompt contributes only its last token before EOS."""
        return True

    def preserve_positions(self) -> PreservePositions:
        """Which positions of each preserve prompt are protected."""
        return "last" if self.preserves_last_token_only() else "all"

    def input_rules(self) -> InputRules:
        """Which prompts the edit is given (templates, preserve set) besides the spec's concepts."""
        return InputRules()

    def progressive_stage(self) -> tuple[Schedule, list[int] | None]:
        """The progressive text-encoder stage's schedule and layers (``none``: K/V only)."""
        return "none", None

    def hardening_rounds(self) -> int:
        """Closed-form adversarial hardening rounds of the K/V edit (:mod:`erasepro_core.harden`); 0: none."""
        return 0

    def solver_weights(self) -> tuple[float, float] | None:
        """``(λ, α)`` of the zero-residual solve, or None for a method that solves otherwise."""
        return None

    def summary(self) -> dict[str, Any]:
        """What the report says about the configuration."""
        schedule = self.progressive_stage()[0] if self.solver_weights() is not None else None
        return {"schedule": schedule, "token_policy": self.pairing_policy(),
                "preserve_tokens": self.preserve_positions()}


@dataclass
class EditInputs:
    """Context-space columns of one job: targets ``x`` and what they must become ``y`` (d × n, float64),
    the preserve statistics (and how many prompts they come from), and the (cached) zero-residual metric for
    this preserve set."""

    x: torch.Tensor
    y: torch.Tensor
    preserve: SiteStats | None
    metric: Callable[[], Metric]
    n_preserve_prompts: int = 0  # prompts behind ``preserve`` (UCE 2023 scales by their count)
    # X Xᵀ and (Y − X) Xᵀ of exactly these columns when the caller keeps them summed (hardening, past n = d): a
    # method that solves on d × d moments may use them instead of summing the columns again.
    summed: Moments | None = None


@dataclass
class KVEdit:
    """``P = A B`` so that every K/V site becomes ``W_o + W_o A B``; ``rank`` is the constraint rank."""

    a: torch.Tensor
    b: torch.Tensor
    rank: int


EditFunction = Callable[[Any, EditInputs], KVEdit]
