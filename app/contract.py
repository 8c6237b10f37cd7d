"""The OpenAPI document as an exact contract: what FastAPI cannot derive from the routes is added here.

* every error status of every operation, as problem details (:func:`app.problems.document_errors`);
* the Bearer scheme on every ``/v1`` operation;
* links (OpenAPI 3.1 §4.8.20) from each create to the operations that read, change, cancel and delete what it
  made, so a client (or a stateful test) can walk from a ``POST`` to everything it enables;
* the registered base models as the closed set of a request's ``base_model`` (the document is rebuilt when
  the registry changes), and that set's first name in the erasure example.

Also the routing facts the error answers need: the methods a path supports (``Allow`` of a 405) and whether a
request reaches a route at all (the Door leaves a 404/405 to the router).
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Match
from starlette.types import Scope

from app.problems import document_errors

METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

BODY_ID = "$response.body#/id"
ERASURE_LINKS = {
    "GetErasure": ("get_erasure", {"job_id": BODY_ID}),
    "CancelErasure": ("cancel_erasure", {"job_id": BODY_ID}),
    "DeleteErasure": ("delete_erasure", {"job_id": BODY_ID}),
    "ErasureEvents": ("erasure_events", {"job_id": BODY_ID}),
    "ErasureDeliveries": ("erasure_deliveries", {"job_id": BODY_ID}),
    "DownloadCheckpoint": ("checkpoint", {"job_id": BODY_ID}),
    "ListEvaluations": ("list_evaluations", {"job_id": BODY_ID}),
    "CreateEvaluation": ("create_evaluation", {"job_id": BODY_ID}),
    "Generate": ("generate_edited", {"job_id": BODY_ID}),
}
GENERATION_LINKS = {
    "GetGeneration": ("get_generation", {"job_id": BODY_ID}),
    "GenerationImages": ("generation_images", {"job_id": BODY_ID}),
    "CancelGeneration": ("cancel_generation", {"job_id": BODY_ID}),
    "DeleteGeneration": ("delete_generation", {"job_id": BODY_ID}),
}
EVALUATION_LINKS = {
    "GetEvaluation": ("get_evaluation", {"job_id": "$request.path.job_id", "eval_id": BODY_ID}),
    "CancelEvaluation": ("cancel_evaluation", {"job_id": "$request.path.job_id", "eval_id": BODY_ID}),
}
ENDPOINT_LINKS = {
    "GetEndpoint": ("get_endpoint", {"endpoint_id": BODY_ID}),
    "UpdateEndpoint": ("update_endpoint", {"endpoint_id": BODY_ID}),
    "RotateSecret": ("rotate_secret", {"endpoint_id": BODY_ID}),
    "DeleteEndpoint": ("delete_endpoint", {"endpoint_id": BODY_ID}),
}
# (operationId, status) of each create -> its links
LINKS: dict[tuple[str, str], dict[str, tuple[str, dict[str, str]]]] = {
    ("submit_erasure", "202"): ERASURE_LINKS,
    ("generate_edited", "202"): GENERATION_LINKS,
    ("generate_base", "202"): GENERATION_LINKS,
    ("create_evaluation", "202"): EVALUATION_LINKS,
    ("create_endpoint", "201"): ENDPOINT_LINKS,
}
SECURITY_SCHEME = {"type": "http", "scheme": "bearer",
                   "description": "An API key: `Authorization: Bearer <key>` (see `erasepro keys create`)."}


def complete(doc: dict[str, Any], base_models: list[str]) -> None:
    """Add to FastAPI's ``doc`` what the module docstring lists (in place)."""
    document_errors(doc)
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = SECURITY_SCHEME
    operations = {op.get("operationId"): op for ops in doc.get("paths", {}).values() for op in ops.values()}
    for path, ops in doc.get("paths", {}).items():
        if path.startswith("/v1"):
            for op in ops.values():
                op["security"] = [{"bearer": []}]
    for (source, status), links in LINKS.items():
        response = operations[source]["responses"][status]
        response["links"] = {name: {"operationId": target, "parameters": params}
                             for name, (target, params) in links.items() if target in operations}
    if base_models:
        _close_base_models(components.get("schemas", {}), base_models)


def _close_base_models(schemas: dict[str, Any], names: list[str]) -> None:
    """``ErasureRequest.base_model``: one of ``names`` (the registry); the example names the first."""
    request = schemas.get("ErasureRequest")
    if not request:
        return
    field = request["properties"]["base_model"]
    field.pop("pattern", None)
    field["enum"] = names
    for example in request.get("examples", []):
        example["base_model"] = names[0]


# ----------------------------------------------------------------------------------------------- routing
def allowed_methods(app: Any, scope: Scope) -> list[str]:
    """Every method some route serves at this request's path (``Allow`` of a 405), OPTIONS excluded."""
    return [m for m in METHOD_ORDER if routed(app, {**scope, "type": "http", "method": m})]


def routed(app: Any, scope: Scope) -> bool:
    """Whether a route serves this method at this path (otherwise the router answers 404 or 405)."""
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)
