"""``/docs``: the interactive API reference, served entirely from this process (no CDN).

Swagger UI's files come from the ``swagger-ui-bundle`` package (in the ``api`` extra) and are served under
``/docs/assets/``; the page names no other host (its validator badge, which calls validator.swagger.io, is off),
and its Content-Security-Policy (:data:`DOCS_CSP`, set by :mod:`app.headers`) lets the browser load nothing from
anywhere else. ReDoc ships no such package, so ``/redoc`` is not served. Without the package, or with
``ERASEPRO_DOCS=0``, ``/docs`` is 404.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger("erasepro.api")

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
# Swagger UI needs its inline start-up script and inline styles, and draws icons as data: images.
DOCS_CSP = (b"default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")


def swagger_assets() -> Path | None:
    """The folder of the installed Swagger UI (``swagger-ui-bundle.js``, ``swagger-ui.css``), or ``None``."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def install_docs(app: FastAPI) -> bool:
    """Serve ``/docs`` and its assets from this process; False (and a log line) when Swagger UI is missing."""
    assets = swagger_assets()
    if assets is None:
        log.warning("ERASEPRO_DOCS is on but the swagger-ui-bundle package is not installed: /docs is off "
                    "(pip install 'erasepro[api]')")
        return False
    app.mount(ASSETS_PATH, StaticFiles(directory=assets), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API reference",
                                   swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
                                   swagger_ui_parameters={"validatorUrl": None})

    return True
