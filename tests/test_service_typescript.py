"""The generated TypeScript client (clients/typescript/) runs the README journey against `erasepro serve`.

Its types come from the live ``/openapi.json`` (openapi-typescript), the journey is type-checked against them
(tsc) and run on Node (openapi-fetch): erase, wait, download (sha256 checked), generate, cancel, delete. Nothing
is hand-written about the API's shapes. ``npm ci`` runs first when ``node_modules`` is missing (the registry's
packages are pinned by package-lock.json).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import SERVE_KEY, ServeProcess, serving  # noqa: E402

CLIENT = Path(__file__).resolve().parents[1] / "clients" / "typescript"


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """``erasepro serve`` on its own defaults (embedded Redis, a supervised worker), the tiny model registered."""
    yield from serving(tmp_path_factory.mktemp("typescript"), {})


@pytest.fixture(scope="module")
def node_client() -> Path:
    assert shutil.which("node") and shutil.which("npm"), "Node and npm are needed (Debian: apt-get install nodejs npm)"
    if not (CLIENT / "node_modules" / "openapi-fetch").is_dir():
        _run(["npm", "ci", "--no-audit", "--no-fund"], CLIENT)
    return CLIENT


def test_the_generated_typescript_client_runs_the_journey(served: ServeProcess, node_client: Path,
                                                          tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{served.port}"
    bin_dir = node_client / "node_modules" / ".bin"
    _run([str(bin_dir / "openapi-typescript"), f"{base_url}/openapi.json", "-o", "schema.d.ts",
          "--default-non-nullable", "false"], node_client)  # a field with a default stays optional
    schema = (node_client / "schema.d.ts").read_text()
    assert '"/v1/erasures/{job_id}/cancel"' in schema and "Problem" in schema
    _run([str(bin_dir / "tsc"), "--noEmit", "-p", "."], node_client)
    out = _run(["node", str(node_client / "journey.mjs")], tmp_path, env={
        "ERASEPRO_URL": base_url, "ERASEPRO_API_KEY": SERVE_KEY, "ERASEPRO_EXAMPLE_MODEL": "tiny"})
    result = json.loads(out.strip().splitlines()[-1])
    assert result["model"] == "tiny" and result["png_bytes"] > 0
    assert (tmp_path / "cat.safetensors").stat().st_size > 0 and (tmp_path / "after.png").read_bytes()[1:4] == b"PNG"
    with served.client() as c:  # the journey left nothing behind
        for job in (result["erasure"], result["cancelled"]):
            assert c.get(f"/v1/erasures/{job}").status_code == 404
