"""The base-model registry: which models this server may edit, by name.

Read from the TOML file named by ``ERASEPRO_BASE_MODELS``::

    [models.sd15]
    path = "/models/stable-diffusion-v1-5"      # a local diffusers folder ...
    # hub_id = "runwayml/stable-diffusion-v1-5" # ... or a hub id (downloads only where allowed)
    family = "sd1"                              # sd1 | sd2 | sdxl | flux | sd3 (FLUX, SD-3: bf16 on GPU)
    dtype = "float16"                           # float32 | float16 | bfloat16 (CPU always uses float32)
    description = "Stable Diffusion 1.5"
    # optional bounds (defaults derived from the model's own config files, see ModelLimits):
    # resolution = 512, max_side = 2048, max_pixels = 4194304, max_steps = 150, max_images = 4

plus the project's bundled model under the name ``bundled``. Clients name a model; they never send a path.
Torch-free: the API and the worker both use it (each reads its own copy of the file, so mount the same one).
"Is this model registered and installed" is decided here only, by :meth:`Registry.require`.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import threading
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from erasepro_core.devices import DTYPE_NAMES
from erasepro_core.families import DEFAULT_LABEL, family_of_label, family_of_pipeline
from erasepro_core.io import read_config
from erasepro_core.prompt_files import PRESERVE_FILE, generic_preserve_file, read_prompt_file

BUNDLED = "bundled"
CANVAS = "canvas"
RESERVED = (BUNDLED, CANVAS)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LIMIT_KEYS = ("resolution", "max_side", "max_pixels", "max_steps", "max_images")
MAX_STEPS = 150
MAX_IMAGES = 4


class RegistryError(ValueError):
    """The registry file is missing, unreadable or malformed (the message says where)."""


class ModelUnavailable(LookupError):
    """A base model a request names is not registered, or registered but not installed on this server."""

    def __init__(self, name: str, registered: bool) -> None:
        self.name, self.registered = name, registered
        super().__init__(f"base model {name!r} is registered but not installed on this server" if registered
                         else f"unknown base model {name!r}; see GET /v1/base-models")


@dataclass(frozen=True)
class ModelLimits:
    """What one generation may ask of a model: ``width, height <= max_side``, ``width*height*n <= max_pixels``.

    Defaults: ``resolution`` = UNet ``sample_size`` × 2^(VAE blocks − 1); ``max_side`` = 4 × resolution;
    ``max_pixels`` = 4 images at twice the resolution = 16 × resolution².
    """

    resolution: int
    max_side: int
    max_pixels: int
    max_steps: int = MAX_STEPS
    max_images: int = MAX_IMAGES

    @classmethod
    def derive(cls, resolution: int, overrides: dict[str, int] | None = None) -> ModelLimits:
        o = overrides or {}
        res = int(o.get("resolution", resolution))
        return cls(resolution=res, max_side=int(o.get("max_side", 4 * res)),
                   max_pixels=int(o.get("max_pixels", 16 * res * res)),
                   max_steps=int(o.get("max_steps", MAX_STEPS)), max_images=int(o.get("max_images", MAX_IMAGES)))


@dataclass(frozen=True)
class BaseModelInfo:
    """One registered base model."""

    name: str
    ref: str
    source: str  # "bundled" | "path" | "hub"
    family: str = DEFAULT_LABEL
    dtype: str | None = None
    description: str = ""
    available: bool = True
    limits: ModelLimits = field(default_factory=lambda: ModelLimits.derive(512))
    text_layers: int | None = None  # layers of the text encoder(s) that feed the UNet (None: not known here)
    preserve_prompts: int = 0  # size of the default preserve set the worker will use for this model

    def public(self) -> dict:
        """What ``GET /v1/base-models`` shows: no filesystem path (a local model's ``ref`` is its name; a hub
        model's is its hub id)."""
        out = asdict(self)
        if self.source != "hub":
            out["ref"] = self.name
        return out


# ------------------------------------------------------------------------ facts read from config files
def _count_prompts(path: Path) -> int:
    try:
        return len(read_prompt_file(path))
    except (OSError, UnicodeDecodeError):
        return 0


def _core_dir() -> Path | None:
    spec = importlib.util.find_spec("erasepro_core")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=64)
def _folder_facts(folder: str, stamp: float) -> tuple[int | None, int | None, int]:
    """``(native resolution, text layers feeding the UNet, default preserve prompts)`` of a diffusers folder.

    Resolution = UNet ``sample_size`` × 2^(len(VAE ``block_out_channels``) − 1). Text layers: the shallowest of
    the family's progressive towers (``num_hidden_layers``; T5's ``num_layers`` for FLUX and SD-3), one fewer
    where the denoiser reads the penultimate layer (SDXL); the family is the one that edits
    ``model_index.json``'s pipeline class.
    """
    root = Path(folder)
    unet, vae = read_config(root / "unet" / "config.json"), read_config(root / "vae" / "config.json")
    sample, blocks = unet.get("sample_size"), vae.get("block_out_channels")
    if isinstance(sample, list | tuple):
        sample = max(sample) if sample else None
    resolution = None
    if isinstance(sample, int) and isinstance(blocks, list) and blocks:
        resolution = sample * 2 ** (len(blocks) - 1)
    elif not unet and isinstance(vae.get("sample_size"), int):  # FLUX/SD-3: the VAE's sample size (as generation)
        resolution = vae["sample_size"]
    index = read_config(root / "model_index.json")
    family = family_of_pipeline([str(index.get("_class_name", ""))])
    towers = [t for t in (family.text_towers if family else ()) if isinstance(index.get(t), list) and index[t][0]]
    configs = [read_config(root / t / "config.json") for t in towers]
    depths = [c.get("num_hidden_layers") or c.get("num_layers") for c in configs]  # num_layers: T5 (FLUX, SD-3)
    layers = None
    if family and depths and all(isinstance(d, int) for d in depths):
        layers = min(depths) - family.penultimate
    own = root / PRESERVE_FILE
    preserve = _count_prompts(own) if own.is_file() else generic_preserve_count()
    return resolution, layers, preserve


def folder_facts(folder: Path) -> tuple[int | None, int | None, int]:
    """:func:`_folder_facts`, re-read when the folder's ``model_index.json`` changes."""
    try:
        stamp = (folder / "model_index.json").stat().st_mtime
    except OSError:
        stamp = -1.0
    return _folder_facts(str(folder), stamp)


@functools.lru_cache(maxsize=1)
def generic_preserve_count() -> int:
    """Prompts in the generic preserve set shipped with erasepro_core."""
    return _count_prompts(generic_preserve_file())


def _info(name: str, ref: str, source: str, folder: Path | None, overrides: dict[str, int],
          **kw: Any) -> BaseModelInfo:
    resolution, layers, preserve = folder_facts(folder) if folder is not None else (None, None, 0)
    label = str(kw.get("family", DEFAULT_LABEL))
    family = family_of_label(label)
    resolution = resolution or (family.labels[label] if family else 512)  # hub models: the family's native size
    return BaseModelInfo(name=name, ref=ref, source=source, limits=ModelLimits.derive(resolution, overrides),
                         text_layers=layers, preserve_prompts=preserve or generic_preserve_count(), **kw)


def bundled_model_dir() -> Path | None:
    """Where the bundled model's diffusers folder is expected, found without importing torch."""
    core = _core_dir()
    return core / "shapes" / "model" if core else None


def bundled_available() -> bool:
    """True when the bundled model ships with this installation (``model_index.json`` present)."""
    d = bundled_model_dir()
    return d is not None and (d / "model_index.json").is_file() and (d / "unet").is_dir()


def bundled_info() -> BaseModelInfo:
    return _info(BUNDLED, BUNDLED, "bundled", bundled_model_dir(), {}, family=DEFAULT_LABEL, dtype=None,
                 description="The project's bundled shapes model (SD-1.x layout, small).",
                 available=bundled_available())


def canvas_model_dir() -> Path | None:
    """Where the shipped canvas-world model's diffusers folder is expected (found without importing torch)."""
    core = _core_dir()
    return core / "canvas" / "model" if core else None


def canvas_info() -> BaseModelInfo:
    d = canvas_model_dir()
    available = d is not None and (d / "model_index.json").is_file() and (d / "unet").is_dir()
    return _info(CANVAS, CANVAS, "bundled", d, {}, family=DEFAULT_LABEL, dtype=None,
                 description="The project's canvas-world model (SD-1.x layout, 32x32, 64 named styles, 20 "
                             "characters; the mass-erasure benchmark's model).", available=available)


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
        if name in RESERVED:
            raise RegistryError(f"{where}: the name {name!r} is reserved for a model the project ships")
        if not isinstance(entry, dict):
            raise RegistryError(f"{where}: must be a table")
        unknown = set(entry) - {"path", "hub_id", "family", "dtype", "description", *LIMIT_KEYS}
        if unknown:
            raise RegistryError(f"{where}: unknown keys {sorted(unknown)}")
        overrides = {k: entry[k] for k in LIMIT_KEYS if k in entry}
        for k, v in overrides.items():
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 2**40:
                raise RegistryError(f"{where}: {k} must be a positive integer")
        path, hub_id = entry.get("path"), entry.get("hub_id")
        if (path is None) == (hub_id is None):
            raise RegistryError(f"{where}: give exactly one of 'path' or 'hub_id'")
        for key in ("path", "hub_id", "family", "dtype", "description"):
            if key in entry and not isinstance(entry[key], str):
                raise RegistryError(f"{where}: {key} must be a string")
        dtype = entry.get("dtype")
        if dtype is not None and dtype not in DTYPE_NAMES:
            raise RegistryError(f"{where}: dtype must be one of {list(DTYPE_NAMES)}")
        if path is not None:
            p = Path(path).expanduser()
            if not p.is_absolute():
                p = (Path(origin).parent / p).resolve() if origin != "<registry>" else p.resolve()
            ref, source, available, folder = str(p), "path", (p / "model_index.json").is_file(), p
        else:
            ref, source, available, folder = str(hub_id), "hub", True, None
        out[name] = _info(name, ref, source, folder if available else None, overrides,
                          family=entry.get("family", DEFAULT_LABEL), dtype=dtype,
                          description=entry.get("description", ""), available=available)
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
            canvas = canvas_info()
            if canvas.available:  # listed only where its weights ship
                out[CANVAS] = canvas
        out.update(self._load())
        return out

    def get(self, name: str) -> BaseModelInfo | None:
        """The model registered as ``name``, or ``None``."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            return None
        return self.models().get(name)

    def require(self, name: str) -> BaseModelInfo:
        """The registered, installed model ``name``; :class:`ModelUnavailable` otherwise (the one place that
        decides it: the API answers 422, a worker fails the job with the same message)."""
        info = self.get(name)
        if info is None or not info.available:
            raise ModelUnavailable(str(name)[:64], registered=info is not None)
        return info
