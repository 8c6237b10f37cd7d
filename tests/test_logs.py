"""Structured logs (erasepro_jobs.logs): JSON lines tagged with the request and job ids from context, extras kept,
tracebacks as text; the text format is unchanged."""

from __future__ import annotations

import json
import logging

from erasepro_jobs import logs


def _line(record_args: dict, **ctx: str) -> dict:
    tokens = [(getattr(logs, k), getattr(logs, k).set(v)) for k, v in ctx.items()]
    try:
        record = logging.LogRecord("erasepro.test", logging.INFO, __file__, 1, "done %s", ("x",), None)
        for k, v in record_args.items():
            setattr(record, k, v)
        return json.loads(logs.JsonFormatter().format(record))
    finally:
        for var, tok in tokens:
            var.reset(tok)


def test_json_lines_carry_the_ids_and_extras() -> None:
    out = _line({"route": "/v1/erasures", "status": 202}, request_id="req-1", job_id="a" * 32)
    assert out["message"] == "done x" and out["level"] == "INFO" and out["logger"] == "erasepro.test"
    assert out["request_id"] == "req-1" and out["job_id"] == "a" * 32
    assert out["route"] == "/v1/erasures" and out["status"] == 202 and out["time"].endswith("Z")
    bare = _line({})
    assert "request_id" not in bare and "job_id" not in bare


def test_exceptions_are_one_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("erasepro.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = logs.JsonFormatter().format(record)
    assert "\n" not in text and "ValueError: boom" in json.loads(text)["exc_info"]


def test_configure_switches_the_root_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("WARNING", "json")
        assert isinstance(root.handlers[0].formatter, logs.JsonFormatter) and root.level == logging.WARNING
        logs.configure("INFO", "text")
        assert not isinstance(root.handlers[0].formatter, logs.JsonFormatter)
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
