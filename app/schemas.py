"""REST request and response bodies.

The erasure request maps onto :class:`erasepro_core.spec.ErasureSpec` (torch-free): ``edits``, ``preserve``
and ``method`` at the top level, every other spec field under ``options``. The options model is generated
from the spec's own fields (same types and bounds, so the OpenAPI schema is exact), and the final check is the
spec's own validation, whose errors are re-labelled with the request field they came from (``422``).
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic.json_schema import SkipJsonSchema

from erasepro_core.methods import METHODS, flat_settings
from erasepro_core.presets import PRESETS, PresetError, PresetParams, apply_preset
from erasepro_core.spec import (
    MAX_EDITS,
    MAX_PRESERVE,
    MAX_PROMPT_CHARS,
    Concept,
    Edit,
    ErasureSpec,
    flat_fields,
    wire_errors,
)
from erasepro_jobs.endpoints import DEFAULT_ROTATION_GRACE_S, MAX_DESCRIPTION, MAX_ROTATION_GRACE_S
from erasepro_jobs.events import EVENT_TYPES
from erasepro_jobs.registry import MAX_IMAGES, MAX_STEPS, NAME_RE

MAX_SIDE = 2048
MAX_PIXELS = 4 * 1024 * 1024  # width * height * num_images
MAX_TIMEOUT_S = 7 * 24 * 3600
MAX_IDEMPOTENCY_KEY = 255
MAX_METADATA_KEYS = 16
METADATA_KEY_RE = r"^[A-Za-z0-9_.\-]{1,40}$"
MAX_METADATA_VALUE = 256
# what a webhook URL looks like before its host is resolved (erasepro_jobs.webhooks.resolve_target): http(s),
# a host name, IPv4 address or bracketed IPv6 address without credentials, a port in 1..65535, then anything
PORT_RE = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
WEBHOOK_URL_RE = rf"^https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::{PORT_RE})?(?:[/?#]\S*)?$"

def _json_integer(value: Any) -> Any:
    """JSON Schema's ``integer``: a number without a fractional part (``3.0`` included), never a bool or a
    string; used with ``strict=True`` models, which would refuse ``3.0``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


def json_int(**constraints: Any) -> Any:
    """An ``int`` field of a ``strict=True`` model that reads JSON Schema's integers (see :func:`_json_integer`),
    with its bounds (``ge``, ``le``, ``multiple_of``) in the document."""
    return Annotated[Annotated[int, Field(**constraints)], BeforeValidator(_json_integer)]


def omittable(tp: Any, **constraints: Any) -> Any:
    """A value that may be left out but is never ``null`` (a query parameter or header: ``None`` when absent),
    its constraints stated on the value in the document."""
    return (Annotated[tp, Field(**constraints)] if constraints else tp) | SkipJsonSchema[None]
EventType = Literal[tuple(EVENT_TYPES)]  # type: ignore[valid-type]
MetadataKey = Annotated[str, StringConstraints(pattern=METADATA_KEY_RE)]
MetadataValue = Annotated[str, StringConstraints(max_length=MAX_METADATA_VALUE)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_KEYS)]

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
_TOP_LEVEL = ("edits", "preserve", "method", "preset")
PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type]

# The registered methods when the API is built (a method registers before ``app`` is imported).
Method = Literal[tuple(METHODS)]  # type: ignore[valid-type]

# Option (wire name) -> the registered method whose setting it is; the common fields belong to none.
METHOD_OF_OPTION = {wire: name for name, settings in flat_settings().items() for wire in settings}


def _option(name: str, f: FieldInfo) -> FieldInfo:
    """The spec's field as an option; a method's setting names its method in the schema (``x-method``), which the
    console's form reads to show it with that method only."""
    f = copy.copy(f)
    if name in METHOD_OF_OPTION:
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        f.json_schema_extra = {**extra, "x-method": METHOD_OF_OPTION[name]}
    return f


# Every wire field of the spec except the top-level ones becomes an option, with the spec's types and bounds
# (each method's settings included; the spec rejects a setting of another method, naming it).
ErasureOptions = create_model(  # type: ignore[call-overload]
    "ErasureOptions",
    __config__=ConfigDict(extra="forbid", strict=True),
    __doc__="Solver options: every ErasureSpec field other than edits/preserve/method (see docs/service.md).",
    **{name: (ann, _option(name, f)) for name, (ann, f) in flat_fields().items() if name not in _TOP_LEVEL},
)


def _remap_loc(loc: tuple[Any, ...], msg: str) -> tuple[Any, ...]:
    """A spec error location -> the request field it came from (``("body", ...)``)."""
    if not loc:
        return ("body", "edits") if "edits" in msg or "anchor" in msg or "target" in msg else ("body",)
    head = loc[0]
    if head in _TOP_LEVEL:
        return ("body", *loc)
    return ("body", "options", *loc)


class ErasureRequest(BaseModel):
    """``POST /v1/erasures``: what to erase, from which registered base model, and how."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "base_model": "bundled", "edits": [{"target": "a red circle", "anchor": "a circle"}],
            "preserve": ["a blue square"], "method": "erasepro", "options": {"schedule": "front"},
        }]},
    )

    base_model: str = Field(min_length=1, max_length=64, pattern=NAME_RE.pattern,
                            description="A name from GET /v1/base-models (never a path).")
    edits: list[Edit] = Field(default_factory=list, max_length=MAX_EDITS, description=(
        "Target -> anchor pairs; at least one unless a preset gives them (then yours come after the preset's)."))
    preserve: list[Concept] = Field(default_factory=list, max_length=MAX_PRESERVE)
    method: Method = "erasepro"
    preset: PresetName | None = Field(default=None, description=(
        "A moderation preset (GET /v1/presets): its edits, preserve set and templates, merged with yours; "
        "options.templates, given, replace the preset's."))
    preset_params: PresetParams | None = Field(default=None, description=(
        "The preset's parameters: 'names' for artists/characters/brands, optionally 'anchor'."))
    options: ErasureOptions = Field(default_factory=ErasureOptions)  # type: ignore[valid-type]
    timeout_s: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S,
                                  description="Job timeout; defaults to and is capped by the server's setting.")
    webhook: str | None = Field(default=None, min_length=8, max_length=2048, pattern=WEBHOOK_URL_RE, description=(
        "An http(s) URL that receives this erasure's events, signed (Standard Webhooks); the secret is in the 202 "
        "answer, once. Loopback and private addresses are refused unless the server allows them."))
    webhook_events: list[EventType] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES),
                                                   description="Only these event types (default: all).")
    metadata: Metadata = Field(default_factory=dict, description=(
        f"Your own labels (at most {MAX_METADATA_KEYS}; keys of 1-40 letters, digits, '_', '.', '-'; values of "
        f"at most {MAX_METADATA_VALUE} characters), returned with the job and filterable: "
        "GET /v1/erasures?metadata[key]=value."))

    def to_spec(self) -> ErasureSpec:
        """The validated :class:`ErasureSpec`; raises ``RequestValidationError`` (422) naming the field."""
        payload = {"edits": [e.model_dump() for e in self.edits], "preserve": list(self.preserve),
                   "method": self.method, **self.options.model_dump(exclude_unset=True)}
        if self.preset is None and self.preset_params is not None:
            raise RequestValidationError([{"type": "value_error", "loc": ("body", "preset_params"),
                                           "msg": "preset_params needs a preset"}])
        if self.preset is not None:
            try:
                payload = apply_preset(payload, self.preset, self.preset_params)
            except PresetError as exc:
                loc = ("body", "preset") if exc.field == "preset" else ("body", "preset_params", exc.field)
                raise RequestValidationError([{"type": "value_error", "loc": loc, "msg": exc.message}]) from None
        elif not self.edits:
            raise RequestValidationError([{"type": "value_error", "loc": ("body", "edits"),
                                           "msg": "give at least one edit, or a preset"}])
        try:
            return ErasureSpec.model_validate(payload)
        except ValidationError as exc:
            errors = []
            for err in wire_errors(exc):
                err["loc"] = _remap_loc(tuple(err["loc"]), err["msg"])
                errors.append(err)
            raise RequestValidationError(errors) from None


class GenerateRequest(BaseModel):
    """``POST .../generate``: sampling parameters (bounded: prompt length, steps, image size and count)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"prompt": "a photo of a red circle", "seed": 0, "steps": 25, "guidance": 5.0, "num_images": 1}]})

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    seed: json_int(ge=0, le=2**31 - 1) = 0
    # None: the base model family's defaults (SD 25 steps / 5.0, FLUX 28 / 3.5, SD-3 28 / 7.0); likewise the
    # resolution.
    steps: json_int(ge=1, le=MAX_STEPS) | None = None
    guidance: float | None = Field(default=None, ge=0, le=50, allow_inf_nan=False)
    width: json_int(ge=8, le=MAX_SIDE, multiple_of=8) | None = None
    height: json_int(ge=8, le=MAX_SIDE, multiple_of=8) | None = None
    num_images: json_int(ge=1, le=MAX_IMAGES) = 1

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt must not be blank")
        return v

    @field_validator("num_images")
    @classmethod
    def _pixel_budget(cls, v: int, info: ValidationInfo) -> int:
        w, h = info.data.get("width") or 1024, info.data.get("height") or 1024
        if w * h * v > MAX_PIXELS:
            raise ValueError(f"width * height * num_images must be at most {MAX_PIXELS} pixels")
        return v


# ----------------------------------------------------------------------------------------------- responses
class Progress(BaseModel):
    stage: str | None = None
    fraction: float = 0.0


class ArtifactFile(BaseModel):
    sha256: str
    size: int


class ErasureView(BaseModel):
    """An erasure job as the API shows it (from Redis while live, from its manifest once finished)."""

    id: str
    status: Status
    base_model: str
    method: str
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    progress: Progress = Field(default_factory=Progress)
    cancel_requested: bool = False
    report: dict[str, Any] | None = None
    error: str | None = None
    attempt: int = Field(default=1, description="Which run this is: a job whose worker died is run again, up to "
                                                "ERASEPRO_JOB_ATTEMPTS times")
    timings: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    webhook: str | None = None
    webhook_events: list[str] | None = None
    base_fingerprint: str | None = None
    artifacts: dict[str, ArtifactFile] = Field(default_factory=dict)
    evaluations: list[dict[str, Any]] = Field(default_factory=list, description="finished robustness evaluations "
                                              "(ASR per attack, efficacy per target and prompt set)")
    links: dict[str, str] = Field(default_factory=dict)


class ErasureList(BaseModel):
    items: list[ErasureView]
    next_cursor: str | None = None


class ErasureAccepted(BaseModel):
    id: str
    status: Status
    links: dict[str, str]
    webhook_secret: str | None = Field(default=None, description="Shown once, when the job is created.")


class GenerationView(BaseModel):
    """A generation job: poll it when ``POST .../generate`` answered 202."""

    id: str
    status: Status
    base_model: str
    erasure_id: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    timings: dict[str, Any] | None = None
    guard: dict[str, Any] | None = Field(default=None, description="The erasure's prompt guard on this prompt "
                                         "(only when the erasure has one): flagged, score, threshold, nearest "
                                         "erased concept, mode.")
    links: dict[str, str] = Field(default_factory=dict)


class GeneratedImages(BaseModel):
    """More than one image (or ``Accept: application/json``): base64-encoded PNGs."""

    id: str
    images: list[str]
    media_type: str = "image/png"
    seed: int
    timings: dict[str, Any] | None = None


class ModelLimitsView(BaseModel):
    """Generation bounds of one model (see ``erasepro_jobs.registry.ModelLimits``)."""

    resolution: int
    max_side: int
    max_pixels: int
    max_steps: int
    max_images: int


class BaseModelView(BaseModel):
    name: str
    ref: str
    source: str
    family: str
    dtype: str | None = None
    description: str = ""
    available: bool
    limits: ModelLimitsView
    text_layers: int | None = None
    preserve_prompts: int = 0


class PresetView(BaseModel):
    """A moderation preset (``erasepro_core/presets/<name>.json``)."""

    name: str
    version: int
    title: str
    description: str
    targets: str = Field(description="What it erases.")
    preserves: str = Field(description="What it keeps.")
    params: dict[str, str] = Field(description="'names': required or not accepted; 'anchor': the default anchor "
                                               "or not accepted.")
    edits: list[dict[str, str]] = Field(description="Its fixed edits (empty for presets that take names).")
    edit: dict[str, str] | None = Field(default=None, description="One edit per name: the name at '{}', the "
                                        "anchor at '{anchor}'.")
    templates: list[str]
    preserve: list[str]
    eval_prompts: list[str] = Field(description="What an evaluation draws (a name at '{}').")
    eval_concept: dict[str, str] | None = Field(default=None, description="What a target-vs-anchor judge "
                                                "compares on a fixed preset's prompts.")
    judge: str = Field(description="The judge that reads its evaluation images.")
    settings: dict[str, Any] = Field(default_factory=dict, description="ErasePro settings it chooses unless the "
                                     "request sets them or picks another method (e.g. characters: token_policy).")


class PresetList(BaseModel):
    items: list[PresetView]


class BaseModelList(BaseModel):
    items: list[BaseModelView]


class ExportAccepted(BaseModel):
    """``format=diffusers|lora|kohya`` before the tar exists: the export job to wait for (poll the same URL)."""

    erasure_id: str
    export_job: str
    status: Status
    retry_after_s: int = 2


class EventView(BaseModel):
    """One entry of an erasure's event log (ids increase; use the last one as ``after`` / ``Last-Event-ID``)."""

    id: str
    type: str
    created_at: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class EventList(BaseModel):
    items: list[EventView]
    next_cursor: str | None = None


class DeliveryView(BaseModel):
    """One attempt to deliver an event to the erasure's webhook or to one of its tenant's endpoints."""

    event_id: str
    type: str
    target: str = Field(default="webhook", description="'webhook' (the erasure's own) or the endpoint's id")
    attempt: int
    at: str | None = None
    outcome: Literal["delivered", "retrying", "failed", "dropped"]
    detail: str = ""


class DeliveryList(BaseModel):
    items: list[DeliveryView]


# ------------------------------------------------------------------------------------- webhook endpoints
WebhookUrl = Annotated[str, Field(min_length=8, max_length=2048, pattern=WEBHOOK_URL_RE, description=(
    "An http(s) URL; loopback and private addresses are refused unless the server allows them."))]
EventFilter = Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES), description=(
    "Only these event types (omitted or null: all)."))]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION)]


class WebhookEndpointCreate(BaseModel):
    """``POST /v1/webhook-endpoints``: a URL that receives the events of all the tenant's erasures."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"url": "https://hooks.example.com/erasepro", "events": ["erasure.succeeded", "erasure.failed"],
         "description": "moderation pipeline"}]})

    url: WebhookUrl
    events: EventFilter | None = None
    description: Description = ""
    enabled: bool = True


class WebhookEndpointUpdate(BaseModel):
    """``PATCH /v1/webhook-endpoints/{id}``: only the fields sent change (``"events": null`` means all; the
    other fields may be left out, never null, and the schema says so)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"events": ["erasure.succeeded"], "enabled": False}]})

    url: WebhookUrl | SkipJsonSchema[None] = None
    events: EventFilter | None = None
    description: Description | SkipJsonSchema[None] = None
    enabled: bool | SkipJsonSchema[None] = None

    @field_validator("url", "description", "enabled")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        if v is None:
            raise ValueError("may be omitted, not null")
        return v


class RotateSecretRequest(BaseModel):
    """``POST /v1/webhook-endpoints/{id}/rotate-secret``: how long the current secret keeps verifying."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"grace_s": 3600}]})

    grace_s: json_int(ge=0, le=MAX_ROTATION_GRACE_S) = Field(default=DEFAULT_ROTATION_GRACE_S, description=(
        "Seconds the current secret stays valid beside the new one (deliveries carry both signatures); 0 "
        "revokes it at once."))


class WebhookEndpointView(BaseModel):
    """A tenant endpoint (its secret is shown only when it is created or rotated)."""

    id: str
    url: str
    events: list[str] | None = None
    description: str = ""
    enabled: bool
    created_at: str | None = None
    updated_at: str | None = None
    previous_secret_expires_at: str | None = Field(default=None, description=(
        "While the secret before the last rotation still signs deliveries: until when."))


class WebhookEndpointWithSecret(WebhookEndpointView):
    secret: str = Field(description="whsec_…: verify deliveries with it. Shown only in this answer.")


class WebhookEndpointList(BaseModel):
    items: list[WebhookEndpointView]
    next_cursor: str | None = None


class AuditEntry(BaseModel):
    """One line of the audit log (``GET /v1/audit``): who did what to which resource, and the answer."""

    id: str = Field(description="Sortable by time; pass the last one back as `cursor`.")
    at: str = Field(description="When the request was answered (UTC, ISO 8601).")
    tenant: str | None = None
    key_id: str | None = Field(default=None, description="The API key's id (never the key).")
    action: str = Field(description="e.g. erasure.create, checkpoint.download, webhook_endpoint.rotate_secret")
    resource: str = Field(default="", description="`{type}/{id}`, e.g. erasure/3f2c…")
    result: int = Field(description="The HTTP status answered.")
    request_id: str
    method: str | None = None
    route: str | None = None
    address: str | None = Field(default=None, description="The client's address as the API saw it.")


class AuditList(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = Field(default=None, description="Pass back as `cursor`; null: the end.")


class StorageUsage(BaseModel):
    used_bytes: int = Field(description="bytes this tenant keeps in the artifact store")
    quota_bytes: int | None = Field(description="ERASEPRO_TENANT_STORAGE (null: no quota); at or past it new jobs "
                                                "are 429")
    by_kind: dict[Literal["checkpoints", "exports", "images", "other"], int] = Field(
        description="checkpoints (deltas, manifests), exports (diffusers/lora/kohya tars), images (evaluations' "
                    "judged images), other (event logs, idempotency records)")


class JobUsage(BaseModel):
    active: int = Field(description="queued + running jobs of every kind")
    limit: int = Field(description="the most queued + running jobs this tenant may have")
    by_kind: dict[str, int] = Field(description="active jobs by kind (erasure, generation, export, evaluation)")


class RetentionView(BaseModel):
    export_ttl_s: int | None = Field(description="exports are removed this long after they were written (null: "
                                                 "only when over the quota)")
    image_ttl_s: int | None = Field(description="evaluations' judged images, likewise")


class UsageView(BaseModel):
    storage: StorageUsage
    jobs: JobUsage
    retention: RetentionView
