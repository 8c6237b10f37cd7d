"""A Python client for the ErasePro REST API (httpx; no torch, no service code).

```python
from erasepro.client import Client

with Client("http://127.0.0.1:8000", api_key="…") as ep:
    job = ep.erase("bundled", [{"target": "circle", "anchor": "square"}])
    done = job.wait()                      # follows the event stream (SSE), polls if it breaks
    job.download("circle.safetensors")     # resumes a cut download (Range + If-Range), checks the sha256
    png = job.generate("a red circle", seed=0)
```

Typed answers (:class:`ErasureView`, :class:`EventView`, …) mirror the API's OpenAPI components; a test keeps
them in step with ``/openapi.json``. Errors are :class:`ApiError`: the status, the server's RFC 9457 problem
details (``detail``; ``errors`` names each offending field of a 422) and the request id.
:func:`verify_webhook` checks a Standard Webhooks delivery (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``) against the endpoint's ``whsec_`` secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ApiError", "BaseModelView", "Client", "Erasure", "ErasureAccepted", "ErasureView", "EventView",
           "GenerationView", "WebhookVerificationError", "verify_webhook"]

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL = ("succeeded", "failed", "cancelled")
TERMINAL_EVENTS = ("erasure.succeeded", "erasure.failed", "erasure.cancelled")
CHUNK = 1 << 20


# ------------------------------------------------------------------------------------------------ models
class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")  # a newer server may add fields; they are kept, not refused


class Progress(_Model):
    stage: str | None = None
    fraction: float = 0.0


class ArtifactFile(_Model):
    sha256: str
    size: int


class ErasureView(_Model):
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
    attempt: int = 1
    timings: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    webhook: str | None = None
    webhook_events: list[str] | None = None
    base_fingerprint: str | None = None
    artifacts: dict[str, ArtifactFile] = Field(default_factory=dict)
    evaluations: list[dict[str, Any]] = Field(default_factory=list)
    links: dict[str, str] = Field(default_factory=dict)


class ErasureAccepted(_Model):
    id: str
    status: Status
    links: dict[str, str]
    webhook_secret: str | None = None


class EventView(_Model):
    id: str
    type: str
    created_at: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class GenerationView(_Model):
    id: str
    status: Status
    base_model: str
    erasure_id: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    timings: dict[str, Any] | None = None
    guard: dict[str, Any] | None = None  # the erasure's prompt guard on this prompt, when it has one
    links: dict[str, str] = Field(default_factory=dict)


class ModelLimitsView(_Model):
    resolution: int
    max_side: int
    max_pixels: int
    max_steps: int
    max_images: int


class BaseModelView(_Model):
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


#: client model -> the OpenAPI component it mirrors (tests/test_client.py compares them)
SCHEMAS: dict[type[BaseModel], str] = {ErasureView: "ErasureView", ErasureAccepted: "ErasureAccepted",
                                       EventView: "EventView", GenerationView: "GenerationView",
                                       BaseModelView: "BaseModelView", ModelLimitsView: "ModelLimitsView",
                                       Progress: "Progress", ArtifactFile: "ArtifactFile"}


# ------------------------------------------------------------------------------------------------ errors
class ApiError(Exception):
    """A non-success answer: ``status``, the problem's ``detail``, its ``errors`` (a 422's offending fields:
    ``loc``, ``msg``, ``type``), the whole ``problem`` (RFC 9457 problem details) and the ``request_id`` to
    quote."""

    def __init__(self, status: int, detail: Any, request_id: str | None = None,
                 problem: Mapping[str, Any] | None = None) -> None:
        self.status, self.detail, self.request_id = status, detail, request_id
        self.problem: dict[str, Any] = dict(problem or {})
        self.errors: list[dict[str, Any]] = list(self.problem.get("errors") or [])
        super().__init__(f"HTTP {status}: {detail}" + (f" (request {request_id})" if request_id else ""))


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        problem = resp.json()
        detail = problem.get("detail")
    except (ValueError, AttributeError):
        problem, detail = None, resp.text[:500]
    raise ApiError(resp.status_code, detail, resp.headers.get("x-request-id"), problem)


# ------------------------------------------------------------------------------------------------ client
class Client:
    """One connection pool to one server, as one API key. ``base_url``/``api_key`` default to the environment's
    ``ERASEPRO_URL`` (else ``http://127.0.0.1:8000``) and ``ERASEPRO_API_KEY``."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        base_url = base_url or os.environ.get("ERASEPRO_URL") or "http://127.0.0.1:8000"
        api_key = api_key or os.environ.get("ERASEPRO_API_KEY")
        if not api_key:
            raise ValueError("an API key is needed: Client(url, api_key=…) or ERASEPRO_API_KEY")
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                 headers={"Authorization": f"Bearer {api_key}", "User-Agent": "erasepro-client/1"})

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.http.request(method, path, **kw)
        _raise_for(resp)
        return resp.json() if resp.content else None

    # ------------------------------------------------------------------------------------- erasures
    def erase(self, base_model: str, edits: Sequence[Mapping[str, str]], *, preserve: Sequence[str] = (),
              method: str | None = None, options: Mapping[str, Any] | None = None,
              metadata: Mapping[str, str] | None = None, webhook: str | None = None,
              webhook_events: Sequence[str] | None = None, timeout_s: int | None = None,
              idempotency_key: str | None = None) -> Erasure:
        """Submit an erasure (``POST /v1/erasures``); returns its handle (``.wait()``, ``.download()``…)."""
        body: dict[str, Any] = {"base_model": base_model, "edits": [dict(e) for e in edits]}
        for name, value in (("preserve", list(preserve)), ("method", method), ("options", options),
                            ("metadata", metadata), ("webhook", webhook), ("webhook_events", webhook_events),
                            ("timeout_s", timeout_s)):
            if value:
                body[name] = dict(value) if isinstance(value, Mapping) else value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        accepted = ErasureAccepted.model_validate(self._json("POST", "/v1/erasures", json=body, headers=headers))
        return Erasure(self, accepted.id, accepted=accepted)

    def erasure(self, erasure_id: str) -> Erasure:
        """The handle of an existing erasure (its view fetched now)."""
        job = Erasure(self, erasure_id)
        job.refresh()
        return job

    def get_erasure(self, erasure_id: str) -> ErasureView:
        return ErasureView.model_validate(self._json("GET", f"/v1/erasures/{erasure_id}"))

    def erasures(self, *, status: Status | None = None, metadata: Mapping[str, str] | None = None,
                 page_size: int = 100) -> Iterator[ErasureView]:
        """Every erasure of the caller, newest first, following the cursor (pages may be short: see the API)."""
        params: dict[str, Any] = {"limit": page_size, **({"status": status} if status else {}),
                                  **{f"metadata[{k}]": v for k, v in (metadata or {}).items()}}
        while True:
            page = self._json("GET", "/v1/erasures", params=params)
            yield from (ErasureView.model_validate(v) for v in page["items"])
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def cancel(self, erasure_id: str) -> ErasureView:
        """Cancel a queued or running erasure (``POST …/cancel``); a running one stops at its next progress step
        (``cancel_requested`` until then). A finished one is an :class:`ApiError` 409."""
        return ErasureView.model_validate(self._json("POST", f"/v1/erasures/{erasure_id}/cancel"))

    def delete(self, erasure_id: str) -> None:
        """Delete a finished erasure with its checkpoint (afterwards it is 404). A queued or running one is an
        :class:`ApiError` 409: :meth:`cancel` it first."""
        self._json("DELETE", f"/v1/erasures/{erasure_id}")

    def events(self, erasure_id: str, *, after: str | None = None, reconnects: int = 100) -> Iterator[EventView]:
        """The erasure's events over Server-Sent Events, from the start (or after ``after``) until its terminal
        event; a dropped connection is resumed with ``Last-Event-ID`` (nothing missed, nothing repeated)."""
        last = after
        for _ in range(reconnects + 1):
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last} if last else {})}
            try:
                with self.http.stream("GET", f"/v1/erasures/{erasure_id}/events", headers=headers,
                                      timeout=httpx.Timeout(self.http.timeout.connect, read=60.0)) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        _raise_for(resp)
                    for ev in _sse(resp.iter_lines()):
                        last = ev.id
                        yield ev
                        if ev.type in TERMINAL_EVENTS:
                            return
            except (httpx.TransportError, httpx.RemoteProtocolError):
                time.sleep(0.5)
                continue
            if self.get_erasure(erasure_id).status in TERMINAL:  # the stream ended: was that the end?
                page = self._json("GET", f"/v1/erasures/{erasure_id}/events", params={"after": last} if last else {})
                for item in page["items"]:
                    yield EventView.model_validate(item)
                return
        raise ApiError(0, f"the event stream of {erasure_id} kept dropping ({reconnects} reconnects)")

    # ------------------------------------------------------------------------------------- downloads
    def download(self, erasure_id: str, dest: str | os.PathLike[str], *, format: str = "delta",
                 export_timeout_s: float = 3600.0) -> Path:
        """Download the checkpoint to ``dest``. A ``dest + '.part'`` left by a cut download is resumed with
        ``Range`` + ``If-Range`` (restarted if the checkpoint changed); the sha256 the server names is checked
        before ``dest`` appears. Exports (diffusers, lora, kohya) are waited for (202 + Retry-After)."""
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        path = f"/v1/erasures/{erasure_id}/checkpoint"
        deadline = time.monotonic() + export_timeout_s
        while True:
            have = part.stat().st_size if part.exists() else 0
            etag = _read_etag(part)
            headers = {"Range": f"bytes={have}-", "If-Range": etag} if have and etag else {}
            with self.http.stream("GET", path, params={"format": format}, headers=headers,
                                  follow_redirects=True) as resp:
                if resp.status_code == 202:
                    resp.read()
                    if time.monotonic() > deadline:
                        raise ApiError(202, f"the {format} export did not finish in {export_timeout_s:g} s")
                    time.sleep(float(resp.headers.get("retry-after", "2")))
                    continue
                if resp.status_code == 416:  # the part is already whole (or longer than the object): start over
                    part.unlink(missing_ok=True)
                    _etag_file(part).unlink(missing_ok=True)
                    continue
                if resp.status_code >= 400:
                    resp.read()
                    _raise_for(resp)
                sha = resp.headers.get("x-content-sha256") or resp.headers.get("etag", "").strip('"')
                mode = "ab" if resp.status_code == 206 else "wb"
                _etag_file(part).write_text(resp.headers.get("etag", ""), encoding="utf-8")
                with open(part, mode) as f:
                    for chunk in resp.iter_bytes(CHUNK):
                        f.write(chunk)
            digest = _sha256(part)
            if sha and digest != sha:
                part.unlink(missing_ok=True)
                _etag_file(part).unlink(missing_ok=True)
                raise ApiError(0, f"the download of {erasure_id} has sha256 {digest}, the server said {sha}")
            os.replace(part, dest)
            _etag_file(part).unlink(missing_ok=True)
            return dest

    # ------------------------------------------------------------------------------------ generation
    def generate(self, prompt: str, *, erasure_id: str | None = None, base_model: str | None = None,
                 wait_s: float = 600.0, **params: Any) -> list[bytes]:
        """PNG bytes of images from an erasure's edited model (``erasure_id``) or an unedited ``base_model``;
        ``params``: ``seed``, ``steps``, ``guidance``, ``width``, ``height``, ``num_images``,
        ``negative_prompt``. A generation still running after the server's wait is polled until ``wait_s``."""
        if (erasure_id is None) == (base_model is None):
            raise ValueError("give exactly one of erasure_id and base_model")
        path = f"/v1/erasures/{erasure_id}/generate" if erasure_id else f"/v1/base-models/{base_model}/generate"
        headers = {"Accept": "application/json"}
        resp = self.http.post(path, json={"prompt": prompt, **params}, headers=headers)
        deadline = time.monotonic() + wait_s
        while resp.status_code == 202:
            if time.monotonic() > deadline:
                raise ApiError(202, f"the generation did not finish in {wait_s:g} s")
            time.sleep(float(resp.headers.get("retry-after", "1")))
            job = GenerationView.model_validate(resp.json())
            resp = self.http.get(f"/v1/generations/{job.id}/images", headers=headers)
        _raise_for(resp)
        return [base64.b64decode(img) for img in resp.json()["images"]]

    def cancel_generation(self, generation_id: str) -> GenerationView:
        """Cancel a queued or running generation (``POST /v1/generations/{id}/cancel``; 409 once finished)."""
        return GenerationView.model_validate(self._json("POST", f"/v1/generations/{generation_id}/cancel"))

    def delete_generation(self, generation_id: str) -> None:
        """Delete a finished generation and its images (409 while it runs: cancel it first)."""
        self._json("DELETE", f"/v1/generations/{generation_id}")

    def base_models(self) -> list[BaseModelView]:
        return [BaseModelView.model_validate(m) for m in self._json("GET", "/v1/base-models")["items"]]


class Erasure:
    """One erasure: its id, its last seen :class:`ErasureView`, and what can be done with it."""

    def __init__(self, client: Client, erasure_id: str, accepted: ErasureAccepted | None = None) -> None:
        self.client, self.id, self.accepted = client, erasure_id, accepted
        self.view: ErasureView | None = None

    @property
    def webhook_secret(self) -> str | None:
        """The secret signing this erasure's webhook deliveries (only on the handle :meth:`Client.erase` made)."""
        return self.accepted.webhook_secret if self.accepted else None

    def refresh(self) -> ErasureView:
        self.view = self.client.get_erasure(self.id)
        return self.view

    def events(self, after: str | None = None) -> Iterator[EventView]:
        return self.client.events(self.id, after=after)

    def wait(self, timeout_s: float = 3600.0, *, raise_on_failure: bool = True) -> ErasureView:
        """Block until the erasure ends (following its events, polling when the stream is unavailable); returns
        the final view. A failed or cancelled erasure raises :class:`ApiError` unless ``raise_on_failure=False``."""
        deadline = time.monotonic() + timeout_s
        try:
            for ev in self.events():
                if ev.type in TERMINAL_EVENTS or time.monotonic() > deadline:
                    break
        except ApiError:
            pass  # fall back to polling below
        while self.refresh().status not in TERMINAL:
            if time.monotonic() > deadline:
                raise TimeoutError(f"erasure {self.id} still {self.view.status} after {timeout_s:g} s")
            time.sleep(0.5)
        if raise_on_failure and self.view.status != "succeeded":
            raise ApiError(409, f"erasure {self.id} {self.view.status}: {self.view.error}")
        return self.view

    def download(self, dest: str | os.PathLike[str], format: str = "delta") -> Path:
        return self.client.download(self.id, dest, format=format)

    def generate(self, prompt: str, **params: Any) -> bytes:
        """The first image (PNG bytes) from the edited model; :meth:`Client.generate` for several."""
        return self.client.generate(prompt, erasure_id=self.id, **params)[0]

    def cancel(self) -> ErasureView:
        return self.client.cancel(self.id)

    def delete(self) -> None:
        self.client.delete(self.id)


# ---------------------------------------------------------------------------------------------- helpers
def _sse(lines: Iterator[str]) -> Iterator[EventView]:
    """Server-Sent Events -> :class:`EventView` (the ``data`` line is the JSON item)."""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield EventView.model_validate(json.loads("\n".join(data)))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


def _etag_file(part: Path) -> Path:
    return part.with_name(part.name + ".etag")


def _read_etag(part: Path) -> str:
    try:
        return _etag_file(part).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class WebhookVerificationError(ValueError):
    """A delivery whose signature or timestamp does not check out."""


def verify_webhook(secret: str | Sequence[str], headers: Mapping[str, str], body: bytes, *,
                   tolerance_s: float = 300.0, now: float | None = None) -> dict[str, Any]:
    """Check a delivery (Standard Webhooks: HMAC-SHA256 of ``"{id}.{timestamp}.{body}"`` with the base64 key
    of the ``whsec_`` secret) and return its parsed body. ``secret``: one, or several while rotating. Raises
    :class:`WebhookVerificationError` for a bad signature or a timestamp further than ``tolerance_s`` from now
    (a replay)."""
    h = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, ts, sigs = h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"]
        stamp = int(ts)
    except (KeyError, ValueError):
        raise WebhookVerificationError("missing or malformed webhook-id/-timestamp/-signature headers") from None
    if abs((now if now is not None else time.time()) - stamp) > tolerance_s:
        raise WebhookVerificationError(f"timestamp {stamp} is more than {tolerance_s:g} s from now")
    signed = f"{msg_id}.{ts}.".encode() + body
    given = [s.partition(",")[2] for s in sigs.split() if s.startswith("v1,")]
    for sec in [secret] if isinstance(secret, str) else secret:
        key = base64.b64decode(sec.removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(g, expected) for g in given):
            return json.loads(body)
    raise WebhookVerificationError("no signature matches the secret")
