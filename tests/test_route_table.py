"""app/main.py's docstring lists every route: the table matches the application's own (no server needed)."""

from __future__ import annotations

import re
from pathlib import Path

import app.main
from app.main import create_app
from erasepro_jobs.settings import Settings

ROW = re.compile(r"^\s{4}((?:GET|POST|PATCH|DELETE)(?:/(?:GET|POST|PATCH|DELETE))*)\s+(\S+)")


def _documented() -> set[tuple[str, str]]:
    """(method, path) per table row; ``[/images]`` names two paths, ``{anything}`` is one parameter."""
    out = set()
    for line in (app.main.__doc__ or "").splitlines():
        m = ROW.match(line)
        if not m:
            continue
        methods, path = m.group(1).split("/"), m.group(2)
        opt = re.search(r"\[(/[^\]]+)\]", path)
        paths = [path.replace(opt.group(0), ""), path.replace(opt.group(0), opt.group(1))] if opt else [path]
        out |= {(meth, re.sub(r"\{[^}]+\}", "{}", p)) for meth in methods for p in paths}
        if path == "/healthz":  # the last row: health checks beside the docs pages
            out |= {("GET", "/readyz")}
    return out


def test_docstring_route_table_matches_the_app() -> None:
    app = create_app(Settings(data_dir=Path("/nonexistent")))
    doc = app.openapi()
    served = {(meth.upper(), re.sub(r"\{[^}]+\}", "{}", path)) for path, ops in doc["paths"].items()
              for meth in ops}
    # a route kept out of the OpenAPI document on purpose (/metrics: for Prometheus, not for clients)
    from app.metrics import router as metrics_router

    served |= {(meth, r.path) for r in metrics_router.routes for meth in r.methods}
    documented = _documented()
    assert served - documented == set(), "served but not in app/main.py's table"
    assert documented - served == set(), "in app/main.py's table but not served"


DOC_ROW = re.compile(r"^\| ((?:GET|HEAD|POST|PATCH|DELETE)(?:/(?:GET|HEAD|POST|PATCH|DELETE))*) \| (.+?) \|")


def _service_md_table() -> set[tuple[str, str]]:
    """(method, path) per row of docs/service.md's route table: every backticked path of the row's second cell
    (query strings dropped, ``[/images]`` naming two paths); HEAD rides with GET."""
    out = set()
    text = (Path(__file__).resolve().parents[1] / "docs" / "service.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        m = DOC_ROW.match(line)
        if not m:
            continue
        methods = [x for x in m.group(1).split("/") if x != "HEAD"]
        for path in re.findall(r"`(/[^`]*)`", m.group(2)):
            path = path.split("?")[0]
            opt = re.search(r"\[(/[^\]]+)\]", path)
            paths = [path.replace(opt.group(0), ""), path.replace(opt.group(0), opt.group(1))] if opt else [path]
            out |= {(meth, re.sub(r"\{[^}]+\}", "{}", p)) for meth in methods for p in paths}
    return out


def test_the_docs_route_table_matches_the_openapi_document() -> None:
    """docs/service.md's table names exactly the operations of /openapi.json (plus /metrics, kept out of it)."""
    doc = create_app(Settings(data_dir=Path("/nonexistent"))).openapi()
    served = {(meth.upper(), re.sub(r"\{[^}]+\}", "{}", path)) for path, ops in doc["paths"].items()
              for meth in ops} | {("GET", "/metrics")}
    documented = _service_md_table()
    assert served - documented == set(), "in the OpenAPI document but not in docs/service.md's table"
    assert documented - served == set(), "in docs/service.md's table but not in the OpenAPI document"
