"""The exceptions that mean "bad input the user can fix", not "bug": CLIs and services report them as one
clear line (exit status 2). Other errors, I/O ones included, keep their traceback."""

from __future__ import annotations

from pydantic import ValidationError

from erasepro_core.adapters import UnsupportedModelError
from erasepro_core.delta import DeltaFormatError, DeltaMismatchError
from erasepro_core.features import TemplateError
from erasepro_core.formats import FormatError
from erasepro_core.pipeline import ModelNotFoundError
from erasepro_core.plan import ErasureError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValidationError, ErasureError, TemplateError, DeltaMismatchError, DeltaFormatError, UnsupportedModelError,
    ModelNotFoundError, FormatError,
    # A path the user named that is missing, of the wrong kind or not theirs to write.
    FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
)
