"""What to erase and how: the validated, torch-free description of an erasure job.

This module imports only pydantic, so the HTTP front end can validate requests without loading torch.

In Python the method is a config object, ``spec.method``: whichever registered config ``method.name`` names
(:mod:`erasepro_core.methods`; the registry is read at validation, so a method registered later is accepted).
On the wire (JSON, the REST API's ``options``, a ``--spec`` file, a delta's metadata) the spec is flat:
``{"method": "uce", "uce_lambda": 0.5, "edits": …}`` — the method's name plus its settings beside the common
fields; :meth:`ErasureSpec.model_dump` writes that form and validation reads it.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo

from erasepro_core.methods import METHODS, EraseProConfig, MethodConfig, UCEConfig, flat_settings
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

# Any registered method's config; ``ErasureSpec._method`` picks the class by ``name`` (SerializeAsAny: its own fields).
MethodSpec = SerializeAsAny[MethodConfig]


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


class PresetRef(BaseModel):
    """Which moderation preset (``erasepro_core.presets``) an erasure's edits came from: provenance only, the
    edits, preserve set and templates it gave are in the spec itself."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=1)
    params: dict[str, list[Concept] | Concept] = Field(default_factory=dict, max_length=8)


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
    preset: PresetRef | None = Field(default=None, description="The moderation preset whose edits, preserve set "
                                     "and templates this spec holds (name, version, parameters); set by "
                                     "erasepro_core.presets.apply_preset, provenance only.")
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
        settings = flat_settings()
        if not isinstance(name, str) or name not in settings:
            raise ValueError(f"method: {name!r} is not a method (one of {sorted(settings)})")
        flat = {k for names in settings.values() for k in names} & data.keys()
        if not isinstance(method, str):
            if flat:
                raise ValueError(f"give the method's settings either flat or inside 'method', not both "
                                 f"({sorted(flat)})")
            return data
        nested = {"name": name}
        own = settings[name]
        for key in sorted(flat):
            if key not in own:
                raise ValueError(f"{key}: not a setting of method {name!r} (its settings: {sorted(own) or 'none'})")
            nested[key.removeprefix(METHODS[name].config.flat_prefix)] = data.pop(key)
        data["method"] = nested
        return data

    @field_validator("method", mode="wrap")
    @classmethod
    def _method(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> MethodConfig:
        """A dict -> the config its ``name`` names; errors located under that name, as a tagged union would."""
        if not isinstance(value, dict):
            return cast(MethodConfig, handler(value))
        name = value.get("name")
        config = METHODS[name].config if isinstance(name, str) and name in METHODS else None
        if config is None:
            raise ValueError(f"method: {name!r} is not a method (one of {sorted(METHODS)})")
        try:
            return config.model_validate(value)
        except ValidationError as exc:
            errors = [{**e, "loc": (name, *e["loc"])} for e in exc.errors(include_url=False)]
            raise ValidationError.from_exception_data(exc.title, errors) from None  # type: ignore[arg-type]

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
        if out.get("preset", 0) is None:  # only a preset's erasure carries the key: other specs dump as before
            del out["preset"]
        method = out.pop("method")
        cfg = self.method
        out["method"] = cfg.name
        for wire, field in METHODS[cfg.name].settings.items():
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
        if len(loc) >= 3 and loc[0] == "method" and loc[1] in METHODS:
            config = METHODS[str(loc[1])].config
            field = config.model_fields.get(str(loc[2]))
            wire = config.flat_prefix + ((field.alias if field else None) or str(loc[2]))
            loc = (wire, *loc[3:])
        elif not loc or (loc[0] == "method" and len(loc) <= 2):  # a spec- or method-level check names its field
            head = msg.split(":", 1)[0]
            if head in wire_fields():
                loc = (head,)
        out.append({**err, "loc": loc, "msg": msg})
    return out


def flat_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """Every wire field of the spec except ``method``: the common ones and each method's settings, with their
    types and bounds (the REST API builds its ``options`` model from these)."""
    out: dict[str, tuple[Any, FieldInfo]] = {
        k: (f.annotation, f) for k, f in ErasureSpec.model_fields.items() if k != "method"
    }
    for method in METHODS.values():
        config = method.config
        for wire, field in method.settings.items():
            f = config.model_fields[field]
            out[wire] = (f.annotation, FieldInfo.merge_field_infos(f, alias=None, validation_alias=None,
                                                                   serialization_alias=None))
    return out


def wire_fields() -> frozenset[str]:
    """Every top-level name of the wire form: the spec's fields and every registered method's settings."""
    return frozenset({*ErasureSpec.model_fields, *(k for m in METHODS.values() for k in m.settings)})


__all__ = [
    "DEFAULT_HELDOUT_TEMPLATES", "DEFAULT_TEMPLATES", "MAX_EDITS", "MAX_PRESERVE", "MAX_PROMPT_CHARS",
    "MAX_TEMPLATES", "Concept", "Edit", "EraseProConfig", "ErasureSpec", "MethodSpec", "PresetRef", "PreserveTokens",
    "Schedule", "TokenPolicy", "UCEConfig", "check_template", "check_text", "flat_fields", "wire_errors", "wire_fields",
]
