"""Process logging for the API and the workers: plain text (the default) or JSON lines (``ERASEPRO_LOG_FORMAT=json``).

A JSON line carries ``time``, ``level``, ``logger``, ``message``, the ``request_id`` of the HTTP request and the
``job_id`` of the job being run when there is one (from context variables, so every log call inside a request or a
job is tagged without passing ids around), any ``extra={…}`` fields the call gave, and ``exc_info`` as text.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("erasepro_request_id", default=None)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("erasepro_job_id", default=None)

TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# attributes every LogRecord has: anything else on a record came from ``extra=`` and is written out
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        for name, var in (("request_id", request_id), ("job_id", job_id)):
            value = var.get()
            if value:
                out[name] = value
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def configure(level: str | int = "INFO", fmt: str = "text") -> None:
    """Set up the root logger (and uvicorn's, whose handlers would otherwise print plain text) once."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else str(level).upper())
    if fmt == "json":
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            lg = logging.getLogger(name)
            lg.handlers[:] = []
            lg.propagate = True
