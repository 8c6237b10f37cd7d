"""One source of dependencies: every third-party import is declared in the extra of the process that runs it,
and the API's dependencies (base + ``api``) pull no torch."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Import name -> distribution, where they differ (starlette ships with fastapi).
DIST_OF = {"PIL": "pillow", "starlette": "fastapi", "yaml": "pyyaml", "pydantic_settings": "pydantic-settings",
           "prometheus_client": "prometheus-client", "swagger_ui_bundle": "swagger-ui-bundle"}
HEAVY = {"torch", "diffusers", "transformers", "accelerate", "safetensors", "torchvision", "open_clip_torch"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _names(reqs: list[str]) -> set[str]:
    out = set()
    for req in reqs:
        m = re.match(r"([A-Za-z0-9_.-]+)(\[([^\]]+)\])?", req)
        assert m, req
        if m.group(1) == "erasepro":  # a self-reference pulls other extras in
            for extra in m.group(3).split(","):
                out |= _names(_project()["optional-dependencies"][extra])
        else:
            out.add(m.group(1).lower())
    return out


def _declared(*extras: str) -> set[str]:
    deps = _names(_project()["dependencies"])
    for e in extras:
        deps |= _names(_project()["optional-dependencies"][e])
    return deps


def _top_level_imports(package: str) -> set[str]:
    """The top-level module of every absolute import in ``package``'s source."""
    mods = set()
    for f in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return mods


LOCAL = {"app", "worker", "erasepro_core", "erasepro_jobs", "erasepro"}


def _imports(package: str) -> set[str]:
    """The distributions ``package`` imports (third-party only)."""
    return {DIST_OF.get(m, m).lower() for m in _top_level_imports(package)
            if m not in sys.stdlib_module_names and m not in LOCAL}


def test_the_api_extra_pulls_no_torch():
    assert not (_declared("api") & HEAVY), _declared("api") & HEAVY


@pytest.mark.parametrize(("package", "extras"), [("app", ("api",)), ("worker", ("worker",)),
                                                 ("erasepro_core", ("worker",)), ("erasepro_jobs", ("api",)),
                                                 ("erasepro_jobs", ("worker",)), ("erasepro", ("client",))])
def test_every_import_is_declared(package, extras):
    missing = _imports(package) - _declared(*extras)
    assert not missing, f"{package} imports {sorted(missing)}, declared nowhere in {extras}"


def _local_imports(package: str) -> set[str]:
    return _top_level_imports(package) & LOCAL


def test_the_layers_stand_on_each_other_one_way():
    """``erasepro_jobs`` (the job domain) is shared by the API and the workers and knows neither; the worker
    never imports the HTTP package; the library knows nothing of jobs or HTTP."""
    assert _local_imports("erasepro_jobs") <= {"erasepro_jobs", "erasepro_core"}
    assert "app" not in _local_imports("worker")
    assert _local_imports("erasepro_core") == {"erasepro_core"}
    assert _local_imports("erasepro") <= {"erasepro"}  # the client stands alone (httpx and pydantic)


def test_dockerfiles_install_the_extras_not_lists_of_their_own():
    for name, extra in (("api", "api"), ("worker", "worker")):
        text = (ROOT / "docker" / f"{name}.Dockerfile").read_text(encoding="utf-8")
        assert f'pip install ".[{extra}]"' in text, name
        assert not re.search(r'pip install[^\n]*"(fastapi|torch|rq|redis|open_clip)', text), name
