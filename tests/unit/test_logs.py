"""Every line on the log stream is JSON when not on a terminal: the worker's own lines
and the libraries' (aiokafka, asyncpg, aiohttp) through the standard library."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
import structlog

from worker import logs
from worker.settings import LogFormat


def _lines(raw: io.BytesIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.getvalue().decode().splitlines()]


def test_library_lines_are_json_with_the_same_keys() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    logs.configure("info", "auto", stream)  # a BytesIO is not a terminal

    structlog.get_logger("worker").info("event", status=200, topic="ocitag.events")
    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Failed to commit on finallization: [Error 25] UnknownMemberIdError"
    )
    logging.getLogger("aiokafka").info("joined group")  # library chatter: left out
    logging.getLogger("asyncpg").warning("connection %s lost", "c1")
    logging.getLogger("aiohttp.access").warning('127.0.0.1 "GET /metrics HTTP/1.1" 200')
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        logging.getLogger("aiokafka").exception("Unexpected error in coordinator routine")
    stream.flush()

    own, coordinator, asyncpg, access, failed = _lines(raw)
    for line in (own, coordinator, asyncpg, access, failed):
        assert set(line) >= {"timestamp", "level", "event"}, line
        assert line["timestamp"].endswith("Z")
    assert (own["event"], own["level"], own["status"]) == ("event", "info", 200)
    assert coordinator["level"] == "error"
    assert coordinator["logger"] == "aiokafka.consumer.group_coordinator"
    assert "UnknownMemberIdError" in coordinator["event"]
    assert (asyncpg["event"], asyncpg["level"]) == ("connection c1 lost", "warning")
    assert access["logger"] == "aiohttp.access"
    assert "ZeroDivisionError: boom" in failed["exception"]


def test_console_format_renders_library_lines_too() -> None:
    stream = io.StringIO()
    logs.configure("info", "console", stream)
    logging.getLogger("aiokafka").warning("coordinator away")
    line = stream.getvalue()
    assert "coordinator away" in line and "warning" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def _fail_holding(authorization: str) -> None:
    header = authorization  # a local a traceback could show
    raise ValueError(f"failed after {len(header)} characters")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_logged_exception_never_shows_local_variables(fmt: LogFormat) -> None:
    """rich's tracebacks (the console renderer's default) list every frame's locals:
    request headers, tokens, connection URLs. Tracebacks say where, never what was held."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    logs.configure("info", fmt, stream)
    secret = "Bearer " + "".join(["hun", "ter2"])  # not in any source line shown
    try:
        _fail_holding(secret)
    except ValueError:
        structlog.get_logger("test").exception("ingest_internal_error")
        logging.getLogger("aiohttp.server").exception("Error handling request")
    text = raw.getvalue().decode()
    assert "_fail_holding" in text  # the traceback is there
    assert "hunter2" not in text
