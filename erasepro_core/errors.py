"""The exceptions that mean "bad input", not "bug": CLIs and services report them as one clear line."""

from __future__ import annotations

from pydantic import ValidationError

from erasepro_core.adapters import UnsupportedModelError
from erasepro_core.delta import DeltaFormatError, DeltaMismatchError
from erasepro_core.erase import ErasureError
from erasepro_core.features import TemplateError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValidationError, ErasureError, TemplateError, DeltaMismatchError, DeltaFormatError, UnsupportedModelError,
    FileNotFoundError, NotADirectoryError, OSError,
)
