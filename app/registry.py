"""The base-model registry: which models this server may edit, by name.

Read from the TOML file named by ``ERASEPRO_BASE_MODELS``::

    [models.sd15]
    path = "/models/stable-diffusion-v1-5"      # a local diffusers folder ...
    # hub_id = "runwayml/stable-diffusion-v1-5" # ... or a hub id (downloads only where allowed)
    family = "sd1"                              # label shown to clients; "flux" also means bfloat16 on GPU
    dtype = "float16"                           # float32 | float16 | bfloat16 (CPU always uses float32)
    description = "Stable Diffusion 1.5"

plus the project's bundled model under the name ``bundled``. Clients name a model; they never send a path.
Torch-free: the API and the worker both use it (each reads its own copy of the file, so mount the same one).
"""

from __future__ import annotations

import importlib.util
import re
import threading
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

BUNDLED = "bundled"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DTYPES = ("float32", "float16", "bfloat16")


class RegistryError(ValueError):
    """The registry file is missing, unreadable or malformed (the message says where)."""


@dataclass(frozen=True)
class BaseModelInfo:
    """One registered base model."""

    name: str
    ref: str
    source: str  # "bundled" | "path" | "hub"
    family: str = "sd1"
    dtype: str | None = None
    description: str = ""
    available: bool = True

    def public(self) -> dict:
        """What ``GET /v1/base-models`` shows (local paths included: the registry is the operator's own)."""
        return asdict(self)


def bundled_model_dir() -> Path | None:
    """Where the bundled model's diffusers folder is expected, found without importing torch."""
    spec = importlib.util.find_spec("erasepro_core")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "shapes" / "model"


def bundled_available() -> bool:
    """True when the bundled model ships with this installation (``model_index.json`` present)."""
    d = bundled_model_dir()
    return d is not None and (d / "model_index.json").is_file() and (d / "unet").is_dir()


def bundled_info() -> BaseModelInfo:
    return BaseModelInfo(
        name=BUNDLED, ref=BUNDLED, source="bundled", family="sd1", dtype=None,
        description="The project's bundled shapes model (SD-1.x layout, small).",
        available=bundled_available(),
    )


def parse_registry(text: str, origin: str = "<registry>") -> dict[str, BaseModelInfo]:
    """Parse registry TOML text into ``{name: BaseModelInfo}``; raise :class:`RegistryError` naming the entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{origin}: not valid TOML: {exc}") from None
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise RegistryError(f"{origin}: [models] must be a table of tables")
    out: dict[str, BaseModelInfo] = {}
    for name, entry in models.items():
        where = f"{origin}: [models.{name}]"
        if not NAME_RE.match(name):
            raise RegistryError(f"{where}: names are 1-64 of A-Z a-z 0-9 . _ - (starting alphanumeric)")
        if name == BUNDLED:
            raise RegistryError(f"{where}: the name {BUNDLED!r} is reserved for the bundled model")
        if not isinstance(entry, dict):
            raise RegistryError(f"{where}: must be a table")
        unknown = set(entry) - {"path", "hub_id", "family", "dtype", "description"}
        if unknown:
            raise RegistryError(f"{where}: unknown keys {sorted(unknown)}")
        path, hub_id = entry.get("path"), entry.get("hub_id")
        if (path is None) == (hub_id is None):
            raise RegistryError(f"{where}: give exactly one of 'path' or 'hub_id'")
        for key in ("path", "hub_id", "family", "dtype", "description"):
            if key in entry and not isinstance(entry[key], str):
                raise RegistryError(f"{where}: {key} must be a string")
        dtype = entry.get("dtype")
        if dtype is not None and dtype not in DTYPES:
            raise RegistryError(f"{where}: dtype must be one of {list(DTYPES)}")
        if path is not None:
            p = Path(path).expanduser()
            if not p.is_absolute():
                p = (Path(origin).parent / p).resolve() if origin != "<registry>" else p.resolve()
            ref, source, available = str(p), "path", (p / "model_index.json").is_file()
        else:
            ref, source, available = str(hub_id), "hub", True
        out[name] = BaseModelInfo(
            name=name, ref=ref, source=source, family=entry.get("family", "sd1"), dtype=dtype,
            description=entry.get("description", ""), available=available,
        )
    return out


class Registry:
    """The registry file plus the bundled model, re-read whenever the file changes (no restart needed)."""

    def __init__(self, path: Path | None, include_bundled: bool = True) -> None:
        self.path = path
        self.include_bundled = include_bundled
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._models: dict[str, BaseModelInfo] = {}

    def _load(self) -> dict[str, BaseModelInfo]:
        if self.path is None:
            return {}
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise RegistryError(f"ERASEPRO_BASE_MODELS names {self.path}, which does not exist") from None
        stamp = (st.st_mtime, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._models = parse_registry(self.path.read_text(encoding="utf-8"), str(self.path))
                self._stamp = stamp
            return self._models

    def models(self) -> dict[str, BaseModelInfo]:
        """All registered models, the bundled one first."""
        out: dict[str, BaseModelInfo] = {}
        if self.include_bundled:
            out[BUNDLED] = bundled_info()
        out.update(self._load())
        return out

    def get(self, name: str) -> BaseModelInfo | None:
        """The model registered as ``name``, or ``None``."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            return None
        return self.models().get(name)
