"""Routes of the web console: the single-page shell at ``/`` and ``/console/…``, its files under
``/console/static/…``.

The console is plain ES modules talking to the public ``/v1`` API with the key the user types (kept in the
tab's ``sessionStorage``), so nothing here authenticates: these routes only hand out the same static files
to everyone. A strict Content-Security-Policy keeps the page from reaching any other origin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
               ".ico": "image/x-icon"}
# 'self' only: no fonts, scripts or images from elsewhere; data:/blob: for generated images and downloads.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}

router = APIRouter(include_in_schema=False)


def _shell() -> HTMLResponse:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


@router.get("/")
@router.get("/console")
async def console_root() -> HTMLResponse:
    """The console's shell; its client-side router shows the page the URL names."""
    return _shell()


@router.get("/console/static/{name:path}")
async def console_static(name: Annotated[str, PathParam(max_length=200)]) -> FileResponse:
    """One shipped file; anything outside the static folder or of an unknown type is 404."""
    path = (STATIC_DIR / name).resolve()
    if not path.is_relative_to(STATIC_DIR) or not path.is_file() or path.suffix not in MEDIA_TYPES:
        raise HTTPException(404, "no such console file")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix],
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


@router.get("/console/{page:path}")
async def console_page(page: Annotated[str, PathParam(max_length=200)]) -> HTMLResponse:
    """Deep links (``/console/erasures/<id>``) load the same shell."""
    return _shell()
