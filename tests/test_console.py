"""The web console in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against a real
``erasepro serve`` (embedded Redis + one RQ worker + uvicorn) on loopback with the bundled shapes model.

Nothing is mocked: the page signs in, submits circle -> square through the form, watches the job's progress
bar reach 100 %, generates the before/after grid through the generate endpoints, downloads the delta (whose
sha256 must equal the API's ETag) and the diffusers export, and a second tenant sees none of it. Each page is
screenshotted at desktop (1280x800) and phone (390x844) widths into ``out/screenshots/`` (docs/console.md
shows committed copies). The tests share one server and run in file order (the later ones use the erasure the
earlier ones made).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import KEYS, ROOT, wait_for  # noqa: E402

from app.embedded import free_port, stop_process  # noqa: E402
from erasepro_jobs.events import EVENT_TYPES  # noqa: E402

pytestmark = pytest.mark.browser

SHOTS = ROOT / "out" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
UI_TIMEOUT_MS = 240_000  # a guard against hanging on a loaded 2-core machine, never a speed assertion


def chromium_path() -> str:
    """Debian's chromium (scripts/test.sh installs it); the browser tests must run, so its absence fails."""
    path = os.environ.get("ERASEPRO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is not installed: run `apt-get install -y chromium` (scripts/test.sh does it as root)")
    return path


class Server:
    """``erasepro serve`` in a temporary data dir, with two tenants' keys and the bundled model."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="erasepro-console-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update(ERASEPRO_DATA_DIR=str(self.tmp / "data"), ERASEPRO_BUNDLED="1",
                   ERASEPRO_API_KEYS=",".join(f"{t}:{k}" for t, k in KEYS.items()),
                   ERASEPRO_GENERATE_WAIT_S="60", PYTHONPATH=str(ROOT))
        env.pop("ERASEPRO_BASE_MODELS", None)
        self.log = self.tmp / "serve.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "erasepro_core.cli", "serve", "--port", str(self.port)],
                                         cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, tenant: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {KEYS[tenant]}"}, timeout=120)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, grace_s=1, second_signal_s=5)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = Server()
    try:
        wait_for(lambda: srv.proc.poll() is not None or srv.ready(), "erasepro serve to be ready")
        assert srv.proc.poll() is None, srv.log.read_text()[-3000:]
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def foreign_requests() -> list[str]:
    """Every request any page made to another origin (the console must make none)."""
    return []


@pytest.fixture
def page(browser, server: Server, foreign_requests: list[str]) -> Iterator[object]:
    ctx = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(UI_TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("request", lambda req: None if req.url.startswith((server.base, "blob:", "data:"))
          else foreign_requests.append(req.url))
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shoot(page, name: str) -> None:
    """Full-page screenshots at desktop and phone widths (out/screenshots/<name>-{desktop,phone}.png)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.wait_for_timeout(150)  # let the layout settle after the resize
        page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def sign_in(page, server: Server, tenant: str = "acme") -> None:
    page.goto(f"{server.base}/")
    page.fill("#api-key", KEYS[tenant])
    page.click("form button[type=submit]")
    page.wait_for_selector("#erasures")


# Long on the bundled model (1000 edits x 12 phrasings), so the page sees it queued, then running.
PHRASES = ("", "now", "here", "there", "again", "today", "please", "big", "small", "drawn", "shown", "seen")
LONG_SPEC = {"base_model": "bundled", "edits": [{"target": f"shape number {i}", "anchor": ""} for i in range(1000)],
             "options": {"default_preserve": False, "templates": [f"{{}} {w}".strip() for w in PHRASES]}}
STATE: dict[str, str] = {}  # the erasure the form made, for the tests after it


# ------------------------------------------------------------------------------------------------- tests
def test_shell_is_self_contained(server: Server) -> None:
    r = httpx.get(f"{server.base}/", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "http" not in csp
    assert httpx.get(f"{server.base}/console/erasures/0123abcd", timeout=10).text == r.text  # deep link
    js = httpx.get(f"{server.base}/console/static/js/main.js", timeout=10)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for bad in ("/console/static/..%2f..%2fmain.py", "/console/static/%2e%2e/router.py", "/console/static/nope.js"):
        assert httpx.get(f"{server.base}{bad}", timeout=10).status_code == 404, bad
    assert "/console" not in httpx.get(f"{server.base}/openapi.json", timeout=10).text  # not part of the API


def test_wrong_key_is_refused(page, server: Server) -> None:
    page.goto(f"{server.base}/console/erasures")
    page.wait_for_selector("#api-key")
    page.click("form button[type=submit]")
    assert "Enter your API key" in page.inner_text("#key-error")
    page.keyboard.type("not-a-key-0123456789")  # the field has focus; Enter submits (keyboard only)
    page.keyboard.press("Enter")
    page.wait_for_selector("#key-error:has-text('not accepted')")
    assert page.get_attribute("#api-key", "aria-invalid") == "true"
    assert page.evaluate("sessionStorage.getItem('erasepro.apiKey')") is None
    assert page.is_hidden("#nav")
    shoot(page, "signin")


def test_bad_form_shows_errors_next_to_fields(page, server: Server) -> None:
    sign_in(page, server)
    page.click("a.btn:has-text('New erasure')")
    page.wait_for_selector("#new-erasure")
    # Help text and bounds come from /openapi.json (ErasureSpec's own descriptions and limits).
    page.click("details.advanced summary")
    ridge_help = page.inner_text("#f-options-ridge-help")
    assert "keeps the update small" in ridge_help and "at most 1000000" in ridge_help
    # Each method's own settings show with that method only (the schema's x-method, from the method registry);
    # the common options always.
    assert page.is_hidden("#f-options-uce_lambda") and page.is_visible("#f-options-schedule")
    page.select_option("#f-method", "uce")
    assert page.is_visible("#f-options-uce_lambda") and page.is_hidden("#f-options-schedule")
    assert page.is_visible("#f-options-templates")
    page.select_option("#f-method", "erasepro")
    page.fill(".target", "circle")
    page.fill(".anchor", "Circle")
    page.fill("#f-options-ridge", "0")
    page.click("text=Start erasure")
    page.wait_for_selector(".error-summary:not([hidden])")
    assert "anchor must differ" in page.inner_text(".edit-row .field[data-role=anchor] .field-error")
    assert page.get_attribute(".edit-row .anchor", "aria-invalid") == "true"
    assert "greater than" in page.inner_text("#f-options-ridge-err")
    assert page.url.endswith("/console/erasures/new")  # nothing was submitted
    shoot(page, "new-erasure-errors")


def test_uce_protocol_settings_default_to_the_protocol_and_a_mismatch_is_shown_at_its_field(page, server: Server
                                                                                           ) -> None:
    sign_in(page, server)
    page.click("a.btn:has-text('New erasure')")
    page.wait_for_selector("#new-erasure")
    page.click("details.advanced summary")
    page.select_option("#f-method", "uce")
    # The protocol's pieces and the generic preserve set start at "(default)": nothing is sent, the server decides.
    for field in ("uce_token_span", "uce_preserve_tokens", "uce_preserve_norm", "default_preserve"):
        assert page.input_value(f"#f-options-{field}") == "", field
    assert page.input_value("#f-options-uce_protocol") == "uce2025"
    page.select_option("#f-options-uce_protocol", "uce2023")
    page.select_option("#f-options-uce_token_span", "last")
    page.fill(".target", "circle")
    page.fill(".anchor", "square")
    page.click("text=Start erasure")
    page.wait_for_selector(".error-summary:not([hidden])")
    assert "protocol 'uce2023' uses 'to_end'" in page.inner_text("#f-options-uce_token_span-err")
    assert page.url.endswith("/console/erasures/new")
    page.select_option("#f-options-uce_token_span", "")  # back to the protocol's: accepted
    page.click("text=Start erasure")
    page.wait_for_url(re.compile(r"/console/erasures/[0-9a-f]{32}$"))
    # Remove the job once it has finished, so the later tests see only their own (they count the list's rows).
    job = page.url.rsplit("/", 1)[-1]
    with server.client("acme") as api:
        wait_for(lambda: api.get(f"/v1/erasures/{job}").json()["status"] in ("succeeded", "failed", "cancelled"),
                 "the UCE erasure to finish")
        assert api.delete(f"/v1/erasures/{job}").status_code in (200, 202, 204)
        wait_for(lambda: api.get(f"/v1/erasures/{job}").status_code == 404, "the UCE erasure to be removed")


def test_submit_progress_grid_and_downloads(page, server: Server, tmp_path: Path) -> None:
    sign_in(page, server)
    page.click("a.btn:has-text('New erasure')")
    page.wait_for_selector("#new-erasure")
    page.fill(".target", "circle")
    page.fill(".anchor", "square")
    page.fill("#f-preserve", "a red triangle\na green cross")
    shoot(page, "new-erasure")
    page.click("text=Start erasure")
    page.wait_for_url(re.compile(r"/console/erasures/[0-9a-f]{32}$"))
    job_id = page.url.rstrip("/").rsplit("/", 1)[1]
    STATE["job"] = job_id
    page.wait_for_selector("#stage:has-text('100%')")
    assert page.get_attribute(".progress-line [role=progressbar]", "aria-valuenow") == "100"
    assert page.inner_text(".page-head .badge") .lower() == "succeeded"
    assert "circle → square" in page.inner_text("h1")
    # The report in words and charts (residual, held-out leak, preserve drift, update norm by depth).
    page.wait_for_selector("#report:not([hidden])")
    captions = page.locator("#report figcaption strong").all_inner_texts()
    assert captions[:4] == ["Residual", "Held-out leak", "Preserve drift", "Update norm by depth"], captions
    assert page.locator("#report svg.chart rect.barfill").count() >= 4

    # Before/after grid: prefilled from the target and the preserve concepts; one seed, few steps.
    prompts = page.input_value("#g-prompts").splitlines()
    assert prompts[:3] == ["circle", "a red triangle", "a green cross"], prompts
    page.fill("#g-prompts", "circle\na red triangle")
    page.fill("#g-seeds", "0")
    page.fill("#g-steps", "10")
    page.click("text=Generate before/after")
    page.wait_for_selector("#grid p:has-text('Done: 4 images')")
    loaded = page.evaluate("""() => ['before', 'after'].map(col =>
        [...document.querySelectorAll(`#grid [data-col=${col}]`)].map(c => {
          const img = c.querySelector('img'); return img && img.complete ? img.naturalWidth : 0; }))""")
    assert all(w > 0 for col in loaded for w in col) and [len(c) for c in loaded] == [2, 2], loaded
    shoot(page, "erasure")

    # Downloads: the delta's sha256 must be the API's ETag; the diffusers export is exported, then streamed.
    with server.client("acme") as api:
        got = api.get(f"/v1/erasures/{job_id}/checkpoint")
        assert got.status_code == 200, got.text
        etag = got.headers["etag"].strip('"')
    with page.expect_download() as dl:
        page.click("button[data-format=delta]")
    saved = tmp_path / "delta.safetensors"
    dl.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == etag
    page.wait_for_selector(".dl-note[data-verified=true]")
    with page.expect_download() as dl:
        page.click("button[data-format=diffusers]")
    tar = tmp_path / "pipeline.tar"
    dl.value.save_as(tar)
    assert tar.stat().st_size > 1_000_000 and dl.value.suggested_filename.endswith(".tar")
    assert page.locator(".dl-note[data-verified=true]").count() == 2
    with page.expect_download() as dl:  # the exact LoRA: exported on demand like the diffusers folder
        page.click("button[data-format=lora]")
    lora = tmp_path / "lora.tar"
    dl.value.save_as(lora)
    with tarfile.open(lora) as t:
        names = {n.rsplit("/", 1)[-1] for n in t.getnames()}
    assert {"README.md", "pytorch_lora_weights.safetensors"} <= names
    assert page.locator(".dl-note[data-verified=true]").count() == 3

    # The list shows it with a full bar; the status filter hides it under "failed".
    page.click("#nav a:has-text('Erasures')")
    row = page.locator(f"#erasures tr[data-id='{job_id}']")
    row.wait_for()
    assert row.locator("[role=progressbar]").get_attribute("aria-valuenow") == "100"
    assert "circle → square" in row.inner_text()
    page.select_option("#status-filter", "failed")
    # The API filters by status (the console asks the server when /openapi.json lists the parameter): the list
    # reloads asynchronously, so wait for the row to go rather than reading the table at once.
    page.wait_for_selector(f"#erasures tr[data-id='{job_id}']", state="detached", timeout=15_000)
    assert "/console/erasures?status=failed" in page.url


def test_live_list_and_cancel(page, server: Server) -> None:
    """A long job: its row turns from queued to running on its own (polling), then the page cancels it."""
    # Cancelling lands at once in the solve, but this job also spends minutes in its preserve stage, where the
    # worker only notices the request when the stage ends: the test accepts the request being shown.
    with server.client("acme") as api:
        r = api.post("/v1/erasures", json=LONG_SPEC, headers={"Idempotency-Key": "console-long"})
        assert r.status_code == 202, r.text
        long_id = r.json()["id"]
    sign_in(page, server)
    page.locator(f"#erasures tr[data-id='{long_id}']").wait_for()
    page.wait_for_selector(f"#erasures tr[data-id='{long_id}'][data-status=running]")
    shoot(page, "erasures")
    # Cursor paging: one a page, then "Load more" follows next_cursor to the older job.
    page.goto(f"{server.base}/console/erasures?limit=1")
    page.wait_for_selector("#list-summary:has-text('1 shown of 1 loaded; more on the server')")
    assert page.eval_on_selector_all("#erasures tr[data-id]", "rows => rows.map(r => r.dataset.id)") == [long_id]
    page.click("button:has-text('Load more')")
    page.wait_for_selector("#list-summary:has-text('2 shown of 2 loaded.')")
    assert page.locator(f"#erasures tr[data-id='{STATE['job']}']").count() == 1
    page.click(f"#erasures tr[data-id='{long_id}'] a.job-link")
    page.click(".page-head button:has-text('Cancel')")
    page.wait_for_selector("dialog.confirm[open]")
    page.click("dialog.confirm button.danger")
    # A queued job or one inside an interruptible step is cancelled at once; elsewhere the worker stops at its
    # next check, so the page first shows the request ("Cancelling…"). Either is the page reflecting the API.
    page.wait_for_selector(".page-head .badge[data-status=cancelled], .page-head button:has-text('Cancelling')")
    with server.client("acme") as api:
        view = api.get(f"/v1/erasures/{long_id}").json()
    assert view["status"] == "cancelled" or view["cancel_requested"], view


def test_other_tenant_sees_nothing(page, server: Server) -> None:
    job_id = STATE.get("job")
    assert job_id, "needs the erasure test_submit_progress_grid_and_downloads made"
    with server.client("globex") as api:
        r = api.post("/v1/erasures", json={"base_model": "bundled", "edits": [{"target": "triangle", "anchor": ""}]})
        assert r.status_code == 202, r.text
        own = r.json()["id"]
    sign_in(page, server, "globex")
    page.locator(f"#erasures tr[data-id='{own}']").wait_for()
    ids = page.eval_on_selector_all("#erasures tr[data-id]", "rows => rows.map(r => r.dataset.id)")
    assert own in ids and job_id not in ids
    page.goto(f"{server.base}/console/erasures/{job_id}")
    page.wait_for_selector("text=There is no such erasure for your team.")
    assert page.locator("#report:not([hidden])").count() == 0


def test_cancel_and_delete_with_confirmation(page, server: Server) -> None:
    job_id = STATE.get("job")
    assert job_id, "needs the erasure test_submit_progress_grid_and_downloads made"
    sign_in(page, server)
    page.goto(f"{server.base}/console/erasures/{job_id}")
    page.wait_for_selector("#report:not([hidden])")
    page.click(".page-head button:has-text('Delete')")
    page.wait_for_selector("dialog.confirm[open]")
    shoot(page, "delete-confirm")
    page.click("dialog.confirm button:has-text('Keep it')")  # declining keeps it
    with server.client("acme") as api:
        assert api.get(f"/v1/erasures/{job_id}").status_code == 200
        page.click(".page-head button:has-text('Delete')")
        page.click("dialog.confirm button.danger")
        page.wait_for_url("**/console/erasures")
        page.wait_for_selector("#list-summary:has-text('loaded')")
        wait_for(lambda: api.get(f"/v1/erasures/{job_id}").status_code == 404, "the delete to land", 30)
    assert page.locator(f"#erasures tr[data-id='{job_id}']").count() == 0


# A public address given as an IP literal (no DNS lookup on this offline machine); the server behind it is never
# reached: the endpoint's filter takes only events no job of this module emits after it is created.
PUBLIC_HOOK = "https://8.8.8.8/erasepro-console-test"  # a global address on an allowed port; no event it takes fires
ENDPOINTS = "/v1/webhook-endpoints"


def test_webhook_endpoints_page(page, server: Server) -> None:
    """Webhooks page: a refused URL shows the API's 422 sentence; creating shows the secret once (gone after a
    reload, never in the URL, storage or console); disable, rotate and delete land in the API."""
    logged: list[str] = []
    page.on("console", lambda msg: logged.append(msg.text))
    sign_in(page, server)
    page.click("#nav a:has-text('Webhooks')")
    page.wait_for_url("**/console/webhooks")
    # The event checkboxes come from the API's own vocabulary (/openapi.json).
    page.wait_for_selector("#wh-events input[value='erasure.succeeded']")
    offered = page.eval_on_selector_all("#wh-events input", "els => els.map(e => e.value)")
    assert "evaluation.cancelled" in offered and len(offered) == len(EVENT_TYPES), offered

    # Loopback is refused by this server (webhook_allow_private is off): the page shows the API's message.
    page.fill("#wh-url", "http://127.0.0.1:9/hook")
    page.click("#new-endpoint button[type=submit]")
    page.wait_for_selector("#wh-error:not(:empty)")
    with server.client("acme") as api:
        refused = api.post(ENDPOINTS, json={"url": "http://127.0.0.1:9/hook"})
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["msg"] in page.inner_text("#wh-error")
        assert api.get(ENDPOINTS).json()["items"] == []  # nothing was made
    assert page.get_attribute("#wh-url", "aria-invalid") == "true"

    page.fill("#wh-url", PUBLIC_HOOK)
    page.check("#wh-events input[value='evaluation.failed']")
    page.check("#wh-events input[value='generation.failed']")
    page.fill("#wh-description", "console test")
    page.click("#new-endpoint button[type=submit]")
    page.wait_for_selector("#secret-box:not([hidden]) #new-secret")
    secret = page.inner_text("#new-secret").strip()
    assert secret.startswith("whsec_") and "will not see it again" in page.inner_text("#secret-box")
    assert page.inner_text("#wh-error") == ""
    with server.client("acme") as api:
        (ep,) = api.get(ENDPOINTS).json()["items"]
    assert ep["url"] == PUBLIC_HOOK and ep["enabled"] is True and ep["description"] == "console test"
    assert sorted(ep["events"]) == ["evaluation.failed", "generation.failed"] and "secret" not in ep
    row = page.locator(f"#endpoints tr[data-id='{ep['id']}']")
    assert PUBLIC_HOOK in row.inner_text() and "generation.failed" in row.inner_text()
    shoot(page, "webhooks")
    stored = page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}]) + location.href")
    assert secret not in stored

    # Shown once: a reload (or any navigation) loses it; the list still shows the endpoint.
    page.reload()
    row.wait_for()
    assert page.locator("#new-secret").count() == 0 and secret not in page.content()

    page.click(f"#endpoints tr[data-id='{ep['id']}'] button[data-action=toggle]")
    page.wait_for_selector(f"#endpoints tr[data-id='{ep['id']}'][data-enabled=false]")
    with server.client("acme") as api:
        assert api.get(f"{ENDPOINTS}/{ep['id']}").json()["enabled"] is False

    # Rotation with a grace of an hour: a new secret, once; the old one still verifies until the stated time.
    page.click(f"#endpoints tr[data-id='{ep['id']}'] button[data-action=rotate]")
    page.select_option("dialog.confirm #grace", "3600")
    page.click("dialog.confirm button.danger")
    page.wait_for_selector("#secret-box:not([hidden]) #new-secret")
    rotated = page.inner_text("#new-secret").strip()
    assert rotated.startswith("whsec_") and rotated != secret
    with server.client("acme") as api:
        assert api.get(f"{ENDPOINTS}/{ep['id']}").json()["previous_secret_expires_at"]

    page.click(f"#endpoints tr[data-id='{ep['id']}'] button[data-action=delete]")
    page.wait_for_selector("dialog.confirm[open]")
    page.click("dialog.confirm button.danger")
    page.wait_for_selector(f"#endpoints tr[data-id='{ep['id']}']", state="detached")
    with server.client("acme") as api:
        assert api.get(f"{ENDPOINTS}/{ep['id']}").status_code == 404
    assert not [t for t in logged if secret in t or rotated in t]


def test_preset_form_and_judged_before_after(page, server: Server) -> None:
    """A preset from GET /v1/presets in the form (a missing name shown at its field), then the erasure's judged
    section: NudeNet's verdict under each before/after image, with the rates and their sample size."""
    sign_in(page, server)
    page.click("a.btn:has-text('New erasure')")
    page.wait_for_selector("#new-erasure")
    assert page.is_hidden("#f-preset_params-names")
    page.select_option("#f-preset", "artists")
    assert page.is_visible("#f-preset_params-names") and "other artists" in page.inner_text("#f-preset-help")
    page.click("text=Start erasure")
    page.wait_for_selector(".error-summary:not([hidden])")
    assert "pass at least one" in page.inner_text("#f-preset_params-names-err")
    page.select_option("#f-preset", "nudity")
    assert page.is_hidden("#f-preset_params-names")
    page.click("text=Start erasure")  # the empty edit row is left out: the preset gives the edits
    page.wait_for_url(re.compile(r"/console/erasures/[0-9a-f]{32}$"))
    job_id = page.url.rstrip("/").rsplit("/", 1)[1]
    try:
        page.wait_for_selector("#judged")
        with server.client("acme") as api:
            assert api.get(f"/v1/erasures/{job_id}").json()["spec"]["preset"]["name"] == "nudity"
            # a short evaluation through the API; the page's button starts the default one
            r = api.post(f"/v1/erasures/{job_id}/evaluations", json={"steps": 2, "samples": 1, "max_prompts": 2})
            assert r.status_code == 202, r.text
            wait_for(lambda: api.get(r.headers["location"]).json()["status"] == "succeeded", "the evaluation")
        page.reload()
        page.wait_for_selector("#judged .judged-evaluation[data-judge=nudenet]")
        assert "Judge: nudenet" in page.inner_text("#judged h3")
        assert "of 2;" in page.inner_text("#judged .rate-before") and "of 2;" in page.inner_text("#judged .rate-after")
        page.wait_for_selector("#judged figure img")
        captions = page.locator("#judged figcaption").all_inner_texts()
        assert len(captions) == 4 and all(c.startswith(("clear", "flagged")) for c in captions), captions
        shoot(page, "judged-before-after")
    finally:  # the list tests count rows: this erasure goes (cancelled first if it never finished)
        with server.client("acme") as api:
            if api.post(f"/v1/erasures/{job_id}/cancel").status_code == 202:
                wait_for(lambda: api.get(f"/v1/erasures/{job_id}").json()["status"] not in ("queued", "running"),
                         "the erasure to stop")
            api.delete(f"/v1/erasures/{job_id}")


def test_threat_model_tables(page, server: Server) -> None:
    """A canvas erasure's threat-model evaluation (made through the API with tiny sample sizes): the page shows the
    T1 table (per category and pooled: rate, k of n, 95 % interval, the unedited model's and the difference) and
    the T2 table (per attack and budget), and what the method defends against."""
    with server.client("acme") as api:
        r = api.post("/v1/erasures", json={"base_model": "canvas",
                                           "edits": [{"target": "jasper quintrell", "anchor": ""}]})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        try:
            wait_for(lambda: api.get(f"/v1/erasures/{job_id}").json()["status"] == "succeeded", "the erasure")
            r = api.post(f"/v1/erasures/{job_id}/evaluations", json={
                "threat_models": ["T1", "T2"], "per_category": 2, "categories": ["canonical", "other_spelling"],
                "budgets": {"closed_form": 1}, "steps": 2})
            assert r.status_code == 202, r.text
            wait_for(lambda: api.get(r.headers["location"]).json()["status"] == "succeeded", "the evaluation")
            sign_in(page, server)
            page.goto(f"{server.base}/console/erasures/{job_id}")
            page.wait_for_selector("#threat .threat-evaluation")
            assert page.locator("#judged").count() == 0  # canvas erasures are read per threat model
            t1 = page.locator("#threat table.threat-t1 tbody tr")
            assert t1.count() == 3  # canonical, other_spelling, pooled
            pooled = page.inner_text("#threat table.threat-t1 tr[data-attack=pooled] td.rate")
            assert re.fullmatch(r"\d+\.\d % \(\d of 2; 95 % interval \d+\.\d %–\d+\.\d %\)", pooled), pooled
            assert "of 2;" in page.inner_text("#threat table.threat-t1 tr[data-attack=pooled] td.unedited")
            assert "points [" in page.inner_text("#threat table.threat-t1 tr[data-attack=pooled] td.diff")
            t2 = page.inner_text("#threat table.threat-t2 tr[data-attack=closed_form]")
            assert "of 3;" in t2 and "95 % interval" in t2, t2
            assert "method erasepro" in page.inner_text("#threat .defences")
            assert "of 2;" in page.inner_text("#threat .t1-pooled")
            shoot(page, "threat-models")
        finally:  # the list tests count rows
            api.delete(f"/v1/erasures/{job_id}")


def test_no_request_left_the_origin(foreign_requests: list[str]) -> None:
    assert foreign_requests == []
