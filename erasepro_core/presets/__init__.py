"""Moderation presets: versioned, ready-made erasures (``nudity``, ``artists``, ``characters``, ``brands``).

Each preset is one JSON file in this folder (package data, no code): what it targets and preserves in words, its
edits (fixed, or one per name the caller gives, from an ``edit`` pattern), the phrasings the solve uses, a
preserve set, the prompts an evaluation draws (I2P style for ``nudity``) and the judge that reads them. Adding a
preset is one file; :data:`PRESETS` reads them all at import. Torch-free (pydantic only): the REST front end
expands presets at the door.

Expansion is plain data: ``expand_preset("artists", {"names": ["van gogh"]})`` gives the edits, preserve set and
templates, and :func:`apply_preset` merges them with a caller's own wire spec (their edits after the preset's,
their templates winning) and records ``preset = {name, version, params}`` in it, so the job's spec names them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from erasepro_core.spec import Concept, Edit, PresetRef, Template, check_text

PRESET_DIR = Path(__file__).parent
MAX_PRESET_NAMES = 100  # names per request: each is an edit times every template in the solve
MAX_NAME_CHARS = 64

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS), AfterValidator(check_text)]


class PresetError(ValueError):
    """A bad preset name or parameter; ``field`` is the parameter it names (``"preset"``, ``"names"``, …)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class PresetParams(BaseModel):
    """A preset's parameters: the names to erase (``artists``, ``characters``, ``brands``) and the anchor they map
    onto (default: the preset's)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    names: list[Name] | None = Field(
        default=None, min_length=1, max_length=MAX_PRESET_NAMES,
        description=f"The artists, characters or brands to erase (1-{MAX_PRESET_NAMES}, each at most "
                    f"{MAX_NAME_CHARS} characters); presets with fixed targets (nudity) take none.")
    anchor: Concept | None = Field(default=None, description="What each name maps onto (default: the preset's "
                                                              "own, e.g. 'art' for artists).")

    @field_validator("names")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        out, seen = [], set()
        for n in v:
            n = n.strip()
            if not n:
                raise ValueError("names must not be blank")
            if n.lower() in seen:
                raise ValueError(f"{n!r} appears twice")
            seen.add(n.lower())
            out.append(n)
        return out


class Preset(BaseModel):
    """One preset file (``<name>.json``): documentation, edits, phrasings, preserve set, evaluation prompts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int = Field(ge=1)
    title: str
    description: str
    targets: str = Field(description="What it erases, in words.")
    preserves: str = Field(description="What it keeps, in words.")
    params: dict[Literal["names", "anchor"], str] = Field(
        default_factory=dict, description="Its parameters: 'names': 'required', 'anchor': the default anchor.")
    edits: list[Edit] = Field(default_factory=list, description="Fixed edits (presets without names).")
    edit: dict[Literal["target", "anchor"], str] | None = Field(
        default=None, description="One edit per name: the name at '{}' in target, the anchor at '{anchor}'.")
    templates: list[Template] = Field(min_length=1)
    preserve: list[Concept] = Field(default_factory=list)
    eval_prompts: list[str] = Field(min_length=1, description="Prompts an evaluation draws (a name at '{}').")
    eval_concept: dict[Literal["target", "anchor"], str] | None = Field(
        default=None, description="What a target-vs-anchor judge (CLIP) compares on the fixed presets' prompts.")
    judge: str = Field(description="The judge that reads its evaluation images (see erasepro_core.judges).")
    settings: dict[str, Any] = Field(default_factory=dict, description="ErasePro settings the preset chooses "
                                     "(flat wire names, e.g. token_policy) unless the request sets them or "
                                     "picks another method.")

    @property
    def takes_names(self) -> bool:
        return self.params.get("names") == "required"

    def expand(self, params: PresetParams | dict[str, Any] | None = None) -> dict[str, Any]:
        """The preset's edits, preserve set, templates and evaluation prompts for ``params`` (wire form)."""
        p = _params(params)
        if self.takes_names and not p.names:
            raise PresetError("names", f"preset {self.name!r} erases the names you give: pass at least one")
        if not self.takes_names and p.names is not None:
            raise PresetError("names", f"preset {self.name!r} has fixed targets and takes no names")
        if "anchor" not in self.params and p.anchor is not None:
            raise PresetError("anchor", f"preset {self.name!r} has fixed anchors and takes no anchor")
        if self.takes_names:
            assert self.edit is not None and p.names
            anchor = self.params.get("anchor", "") if p.anchor is None else p.anchor
            edits = [{"target": self.edit["target"].replace("{}", n),
                      "anchor": self.edit.get("anchor", "").replace("{anchor}", anchor)} for n in p.names]
            if any(e["target"].lower() == e["anchor"].lower() for e in edits):
                raise PresetError("anchor", f"{anchor!r} is also one of the names")
            # template-major, so the first prompts of a capped evaluation cover every name once
            items = [{"prompt": t.replace("{}", n), "target": n, "anchor": anchor}
                     for t in self.eval_prompts for n in p.names]
        else:
            edits = [e.model_dump() for e in self.edits]
            concept = self.eval_concept or {"target": edits[0]["target"], "anchor": edits[0]["anchor"]}
            items = [{"prompt": t, "target": concept["target"], "anchor": concept.get("anchor", "")}
                     for t in self.eval_prompts]
        erased = {e["target"].lower() for e in edits}
        preserve = [c for c in self.preserve if c.lower() not in erased]
        used = {k: v for k, v in p.model_dump().items() if v is not None}
        return {"edits": edits, "preserve": preserve, "templates": list(self.templates),
                "eval_prompts": [i["prompt"] for i in items], "eval_items": items, "judge": self.judge,
                "preset": {"name": self.name, "version": self.version, "params": used}}

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/presets`` shows of it."""
        return {"name": self.name, "version": self.version, "title": self.title, "description": self.description,
                "targets": self.targets, "preserves": self.preserves,
                "params": {"names": "required" if self.takes_names else "not accepted",
                           "anchor": self.params.get("anchor", "not accepted")},
                "edits": [e.model_dump() for e in self.edits], "edit": self.edit, "templates": list(self.templates),
                "preserve": list(self.preserve), "eval_prompts": list(self.eval_prompts),
                "eval_concept": self.eval_concept, "judge": self.judge, "settings": dict(self.settings)}


def _params(params: PresetParams | dict[str, Any] | None) -> PresetParams:
    if isinstance(params, PresetParams):
        return params
    try:
        return PresetParams.model_validate(params or {})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = str(err["loc"][0]) if err["loc"] else "params"
        raise PresetError(field, str(err["msg"]).removeprefix("Value error, ")) from None


def _load(path: Path) -> Preset:
    preset = Preset.model_validate(json.loads(path.read_text(encoding="utf-8")))
    if preset.name != path.stem:
        raise ValueError(f"{path}: name {preset.name!r} differs from the file's")
    if preset.takes_names == (preset.edit is None) or (not preset.takes_names and not preset.edits):
        raise ValueError(f"{path}: a preset has either 'edits' or names and an 'edit' pattern")
    return preset


PRESETS: dict[str, Preset] = {p.stem: _load(p) for p in sorted(PRESET_DIR.glob("*.json"))}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; :class:`PresetError` naming the known ones otherwise."""
    preset = PRESETS.get(name) if isinstance(name, str) else None
    if preset is None:
        raise PresetError("preset", f"{name!r} is not a preset (one of {sorted(PRESETS)})")
    return preset


def expand_preset(name: str, params: PresetParams | dict[str, Any] | None = None) -> dict[str, Any]:
    """:meth:`Preset.expand` of the preset called ``name``."""
    return get_preset(name).expand(params)


def apply_preset(data: dict[str, Any], name: str, params: PresetParams | dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """A wire spec with preset ``name`` merged in: its edits then yours, its preserve set then yours, its
    templates unless you give some, and ``preset`` = its name, version and parameters."""
    out = dict(data)
    x = expand_preset(name, params)
    out["edits"] = [*x["edits"], *(out.get("edits") or [])]
    out["preserve"] = [*x["preserve"], *(out.get("preserve") or [])]
    out.setdefault("templates", x["templates"])
    if out["templates"] is None:
        out["templates"] = x["templates"]
    out["preset"] = x["preset"]
    if out.get("method", "erasepro") == "erasepro":
        for key, value in get_preset(name).settings.items():
            out.setdefault(key, value)
    return out


def eval_prompts(ref: PresetRef | dict[str, Any]) -> list[str]:
    """The evaluation prompts of the preset an erasure used (its ``spec.preset``)."""
    return eval_items(ref)["eval_prompts"]


def eval_items(ref: PresetRef | dict[str, Any]) -> dict[str, Any]:
    """The preset an erasure used (its ``spec.preset``) expanded again: ``eval_items`` (prompt, target, anchor)."""
    ref = ref if isinstance(ref, PresetRef) else PresetRef.model_validate(ref)
    return expand_preset(ref.name, ref.params)


__all__ = ["MAX_NAME_CHARS", "MAX_PRESET_NAMES", "PRESETS", "PRESET_DIR", "Preset", "PresetError", "PresetParams",
           "apply_preset", "eval_items", "eval_prompts", "expand_preset", "get_preset"]
