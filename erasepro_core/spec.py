"""What to erase and how: the validated, torch-free description of an erasure job.

This module imports only pydantic, so the HTTP front end can validate requests without loading torch.

In Python the method is a config object, ``spec.method`` (a union discriminated by ``method.name``: see
:mod:`erasepro_core.methods`). On the wire (JSON, the REST API's ``options``, a ``--spec`` file, a delta's
metadata) the spec is flat: ``{"method": "uce", "uce_lambda": 0.5, "edits": …}`` — the method's name plus its
settings beside the common fields; :meth:`ErasureSpec.model_dump` writes that form and validation reads it.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo

from erasepro_core.methods import METHODS, EraseProConfig, MethodConfig, UCEConfig
from erasepro_core.methods.base import PreserveTokens, Schedule, TokenPolicy

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

MethodSpec = Annotated[EraseProConfig | UCEConfig, Field(discriminator="name")]


def check_text(v: str) -> str:
    """Reject characters that render invisibly or reorder text (control, zero-width, bidi overrides): a prompt
    that looks like one concept but tokenises as another."""
    for ch in v:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") and ch not in " ":
            name = unicodedata.name(ch, "control character")
            raise ValueError(f"contains an invisible or control character ({name}, U+{ord(ch):04X})")
    return v


def check_template(t: str) -> str:
    """Exactly one ``{}`` and no other format field or brace (``"{0}"``, ``"{x}"``, ``"{}}"`` are refused)."""
    check_text(t)
    if t.count("{}") != 1:
        raise ValueError(f"template {t!r} must contain '{{}}' exactly once")
    rest = t.replace("{}", "", 1)
    if "{" in rest or "}" in rest:
        raise ValueError(f"template {t!r} has a brace or format field besides the one '{{}}'")
    if len(t) > MAX_PROMPT_CHARS:
        raise ValueError(f"template {t!r} is longer than {MAX_PROMPT_CHARS} characters")
    return t


Concept = Annotated[str, Field(max_length=MAX_PROMPT_CHARS), AfterValidator(check_text)]
Template = Annotated[str, AfterValidator(check_template)]


class Edit(BaseModel):
    """Map ``target`` onto ``anchor`` (``""`` = the empty concept)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

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


def _flat_names(config: type[MethodConfig]) -> dict[str, str]:
    """Wire name -> field name of a method's settings (everything but ``name``)."""
    return {config.flat_prefix + (f.alias or k): k for k, f in config.model_fields.items() if k != "name"}


FLAT_SETTINGS: dict[str, dict[str, str]] = {name: _flat_names(m.config) for name, m in METHODS.items()}


class ErasureSpec(BaseModel):
    """An erasure job: edits, preservation, phrasings, and the method with its settings.

    Defaults (ErasePro, ``schedule="none"``, ``token_policy="last"``, ``preserve_tokens="last"``) are the best
    configuration on the shapes-world erasure benchmark (docs/benchmarks.md); the progressive stage is one
    ``schedule="front"`` (or ``"uniform"``) away. ``method="uce"`` alone is UCE as its authors' current script
    runs it (protocol ``uce2025``: bare concepts, named preserve concepts only). ``method`` accepts a name
    (``"uce"``), a config object, or a dict with ``name``; flat settings beside it (``schedule=…``,
    ``uce_lambda=…``) go into the method's config.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    edits: list[Edit] = Field(min_length=1, max_length=MAX_EDITS)
    preserve: list[Concept] = Field(default_factory=list, max_length=MAX_PRESERVE)
    # Both left out (None): the method's default, set at validation (ErasePro and UCE 'custom': on and
    # DEFAULT_TEMPLATES; UCE 'uce2025'/'uce2023': off and the bare concept, as the authors' scripts).
    default_preserve: bool | None = Field(default=None, description="Also protect a generic preserve set (the "
                                          "base model's own erasepro_preserve.txt, else the shipped one) besides "
                                          "yours. Left out: on, except for UCE's uce2025/uce2023 protocols, which "
                                          "preserve only the concepts you name (and refuse true).")
    templates: list[Template] | None = Field(default=None, min_length=1, max_length=MAX_TEMPLATES,
                                             description="Phrasings the solve uses; each concept is inserted at "
                                             "'{}'. Left out: " + ", ".join(repr(t) for t in DEFAULT_TEMPLATES)
                                             + "; for UCE's uce2025/uce2023 protocols the bare concept '{}' only "
                                             "(given, they phrase the erase prompts only, as the authors' "
                                             "--expand_prompts).")
    heldout_templates: list[Template] = Field(default_factory=lambda: list(DEFAULT_HELDOUT_TEMPLATES),
                                              max_length=MAX_TEMPLATES,
                                              json_schema_extra={"default": list(DEFAULT_HELDOUT_TEMPLATES)},
                                              description="Phrasings never used by the solve: the report "
                                                          "measures the leak on them.")
    method: MethodSpec = Field(default_factory=EraseProConfig)
    prompt_guard: Literal["off", "refuse", "log"] = Field(
        default="off", description="A prompt guard built from this erasure's features (erasepro_core/guard.py): "
        "'refuse' makes generation with this erasure answer 422 for prompts near an erased concept, 'log' "
        "generates and records the flag; 'off' (default) builds none. Its threshold is set on the preserve set.")

    @model_validator(mode="before")
    @classmethod
    def _nest_method_settings(cls, data: Any) -> Any:
        """Flat wire form -> ``method`` config: ``{"method": "uce", "uce_lambda": 1}`` -> ``method=UCEConfig(…)``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        method = data.get("method", "erasepro")
        if isinstance(method, MethodConfig):
            name = method.name
        elif isinstance(method, dict):
            name = method.get("name", "erasepro")
        else:
            name = method
        if not isinstance(name, str) or name not in FLAT_SETTINGS:
            raise ValueError(f"method: {name!r} is not a method (one of {sorted(FLAT_SETTINGS)})")
        flat = {k for names in FLAT_SETTINGS.values() for k in names} & data.keys()
        if not isinstance(method, str):
            if flat:
                raise ValueError(f"give the method's settings either flat or inside 'method', not both "
                                 f"({sorted(flat)})")
            return data
        nested = {"name": name}
        own = FLAT_SETTINGS[name]
        for key in sorted(flat):
            if key not in own:
                raise ValueError(f"{key}: not a setting of method {name!r} (its settings: {sorted(own) or 'none'})")
            nested[key.removeprefix(METHODS[name].config.flat_prefix)] = data.pop(key)
        data["method"] = nested
        return data

    @model_validator(mode="after")
    def _method_inputs(self) -> ErasureSpec:
        """Templates and the generic preserve set left out take the method's defaults; a method that preserves
        only the named concepts (UCE's uce2025/uce2023) refuses the generic set, naming it."""
        rules = self.method.input_rules()
        if self.templates is None:
            self.templates = list(rules.templates or DEFAULT_TEMPLATES)
        if self.default_preserve is None:
            self.default_preserve = rules.generic_preserve
        elif self.default_preserve and not rules.generic_preserve_allowed:
            raise ValueError(f"default_preserve: {rules.who} preserves only the concepts you name; set "
                             "uce_protocol to 'custom' to add the generic preserve set")
        return self

    @model_validator(mode="after")
    def _layers_need_progressive(self) -> ErasureSpec:
        schedule, layers = self.method.progressive_stage()
        if isinstance(self.method, EraseProConfig) and layers is not None and schedule == "none":
            raise ValueError("layers: only the progressive stage uses them; set schedule to 'front' or 'uniform'")
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

    @field_validator("preserve")
    @classmethod
    def _preserve(cls, v: list[str]) -> list[str]:
        return [p.strip() for p in v if p.strip()]

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any) -> dict[str, Any]:
        """The wire form: the method's name, its settings beside the common fields."""
        out = handler(self)
        method = out.pop("method")
        cfg = self.method
        out["method"] = cfg.name
        for wire, field in FLAT_SETTINGS[cfg.name].items():
            value = method.get(field, method.get(type(cfg).model_fields[field].alias or field))
            out[wire] = value
        return out


def wire_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """``exc.errors()`` with locations in the wire form: ``("method", "erasepro", "ridge")`` -> ``("ridge",)``,
    and a spec-level error whose message starts with a field name (``"layers: …"``) located at that field."""
    out = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = tuple(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if len(loc) >= 3 and loc[0] == "method" and loc[1] in FLAT_SETTINGS:
            config = METHODS[str(loc[1])].config
            field = config.model_fields.get(str(loc[2]))
            wire = config.flat_prefix + ((field.alias if field else None) or str(loc[2]))
            loc = (wire, *loc[3:])
        elif not loc or (loc[0] == "method" and len(loc) <= 2):  # a spec- or method-level check names its field
            head = msg.split(":", 1)[0]
            if head in WIRE_FIELDS:
                loc = (head,)
        out.append({**err, "loc": loc, "msg": msg})
    return out


def flat_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """Every wire field of the spec except ``method``: the common ones and each method's settings, with their
    types and bounds (the REST API builds its ``options`` model from these)."""
    out: dict[str, tuple[Any, FieldInfo]] = {
        k: (f.annotation, f) for k, f in ErasureSpec.model_fields.items() if k != "method"
    }
    for name, names in FLAT_SETTINGS.items():
        config = METHODS[name].config
        for wire, field in names.items():
            f = config.model_fields[field]
            out[wire] = (f.annotation, FieldInfo.merge_field_infos(f, alias=None, validation_alias=None,
                                                                   serialization_alias=None))
    return out


WIRE_FIELDS = frozenset({*ErasureSpec.model_fields, *(k for names in FLAT_SETTINGS.values() for k in names)})

__all__ = [
    "DEFAULT_HELDOUT_TEMPLATES", "DEFAULT_TEMPLATES", "FLAT_SETTINGS", "MAX_EDITS", "MAX_PRESERVE", "MAX_PROMPT_CHARS",
    "MAX_TEMPLATES", "Concept", "Edit", "EraseProConfig", "ErasureSpec", "MethodSpec", "PreserveTokens",
    "Schedule", "TokenPolicy", "UCEConfig", "check_template", "check_text", "flat_fields", "wire_errors",
]
