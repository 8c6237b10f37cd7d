"""What to erase and how: the validated, torch-free description of an erasure job.

This module imports only pydantic, so the HTTP front end can validate requests without loading torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Method = Literal["erasepro", "uce"]
Schedule = Literal["uniform", "front", "none"]
TokenPolicy = Literal["last", "to_eos", "to_end"]
PreserveTokens = Literal["last", "all"]

MAX_EDITS = 1000
MAX_PROMPT_CHARS = 300
MAX_PRESERVE = 5000
MAX_TEMPLATES = 64

# Phrasings the solve uses: each target/anchor/preserve concept is inserted at ``{}``.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a photo of {}",
    "an image of {}",
    "a picture of {}",
    "a rendering of {}",
)
# Phrasings never used by the solve: the report measures the leak on them.
DEFAULT_HELDOUT_TEMPLATES: tuple[str, ...] = (
    "a drawing of {}",
    "a close-up of {}, high quality",
    "{} in the center",
)

Concept = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]


def _check_template(t: str) -> str:
    if t.count("{}") != 1:
        raise ValueError(f"template {t!r} must contain '{{}}' exactly once")
    if len(t) > MAX_PROMPT_CHARS:
        raise ValueError(f"template {t!r} is longer than {MAX_PROMPT_CHARS} characters")
    return t


class Edit(BaseModel):
    """Map ``target`` onto ``anchor`` (``""`` = the empty concept)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Concept
    anchor: Concept = ""

    @field_validator("target")
    @classmethod
    def _target_not_blank(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("target must be a non-empty concept")
        return v

    @field_validator("anchor")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @model_validator(mode="after")
    def _distinct(self) -> Edit:
        if self.target.lower() == self.anchor.lower():
            raise ValueError(f"anchor must differ from target ({self.target!r})")
        return self


class ErasureSpec(BaseModel):
    """An erasure job: edits, preservation, phrasings, method and hyper-parameters.

    Defaults (``schedule="none"``, ``token_policy="last"``, ``preserve_tokens="last"``) are the best
    configuration on the shapes-world erasure benchmark (docs/benchmarks.md); the progressive stage is one
    ``schedule="front"`` (or ``"uniform"``) away.
    ``preserve_tokens``: which tokens of each preserve prompt are protected — ``last`` (its last token before
    EOS, the subject; the measured default) or ``all`` (every token through EOS and a few pads).
    ``preserve_weight`` is λ and ``ridge`` is α in ``min λ||Δ C_p||² + α||Δ||²  s.t.  Δ X = R``.
    ``layers`` are text-encoder layer indices for the progressive stage (``None`` = the method default,
    negative indices count from the last layer). ``uce_*`` are the UCE baseline's λ and scales.
    """

    model_config = ConfigDict(extra="forbid")

    edits: list[Edit] = Field(min_length=1, max_length=MAX_EDITS)
    preserve: list[Concept] = Field(default_factory=list, max_length=MAX_PRESERVE)
    default_preserve: bool = Field(default=True, description="Also protect a generic preserve set (the base model's "
                                   "own erasepro_preserve.txt, else the shipped one) besides your concepts.")
    preserve_tokens: PreserveTokens = Field(default="last", description="Which tokens of each preserve prompt are "
                                            "protected: 'last' (the subject, before EOS) or 'all' (every token).")
    templates: list[str] = Field(default_factory=lambda: list(DEFAULT_TEMPLATES), min_length=1,
                                 max_length=MAX_TEMPLATES, json_schema_extra={"default": list(DEFAULT_TEMPLATES)},
                                 description="Phrasings the solve uses; each concept is inserted at '{}'.")
    heldout_templates: list[str] = Field(default_factory=lambda: list(DEFAULT_HELDOUT_TEMPLATES),
                                         max_length=MAX_TEMPLATES, description="Phrasings never used by "
                                         "the solve: the report measures the leak on them.",
                                         json_schema_extra={"default": list(DEFAULT_HELDOUT_TEMPLATES)})
    method: Method = "erasepro"
    schedule: Schedule = Field(default="none", description="The progressive text-encoder stage: 'none' (K/V "
                               "edit only, the measured default), 'front' or 'uniform' (how its strength "
                               "spreads over the layers).")
    layers: list[int] | None = Field(default=None, max_length=128, description="Text-encoder layers of the "
                                     "progressive stage (empty = the method default; negative counts from the "
                                     "last layer).")
    token_policy: TokenPolicy = Field(default="last", description="Which target tokens are edited: 'last' "
                                      "(the concept's last token), 'to_eos' (through EOS) or 'to_end' (all).")
    preserve_weight: float = Field(default=1.0, gt=0, le=1e6, description="λ in min λ‖Δ C_p‖² + α‖Δ‖² s.t. "
                                   "Δ X = R: how hard preserved concepts are held still.")
    ridge: float = Field(default=1e-2, gt=0, le=1e6, description="α in the same objective: keeps the update small.")
    uce_lambda: float = Field(default=0.5, gt=0, le=1e6, description="UCE baseline only: its λ (ridge).")
    uce_erase_scale: float = Field(default=1.0, ge=0, le=1e6, description="UCE baseline only: erase scale.")
    uce_preserve_scale: float = Field(default=1.0, ge=0, le=1e6, description="UCE baseline only: preserve scale.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Recorded with the job for reproducibility.")

    @field_validator("templates", "heldout_templates")
    @classmethod
    def _templates(cls, v: list[str]) -> list[str]:
        return [_check_template(t) for t in v]

    @field_validator("preserve")
    @classmethod
    def _preserve(cls, v: list[str]) -> list[str]:
        return [p.strip() for p in v if p.strip()]

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("layers must not repeat")
        return v

    @model_validator(mode="after")
    def _layers_need_progressive(self) -> ErasureSpec:
        if self.layers is not None and (self.method == "uce" or self.schedule == "none"):
            raise ValueError("layers: only the progressive stage uses them; set schedule to 'front' or 'uniform' "
                             "(method 'erasepro')")
        return self

    @model_validator(mode="after")
    def _unique_targets(self) -> ErasureSpec:
        seen: set[str] = set()
        for e in self.edits:
            if e.target.lower() in seen:
                raise ValueError(f"edits: target {e.target!r} appears twice")
            seen.add(e.target.lower())
        targets = {e.target.lower() for e in self.edits}
        for e in self.edits:
            if e.anchor.lower() in targets:
                raise ValueError(f"edits: anchor {e.anchor!r} is itself a target")
        return self
