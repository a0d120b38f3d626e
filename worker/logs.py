"""structlog set-up: JSON lines when not on a terminal, readable console output on one.
Called once at start; nothing is configured at import time.

The standard library's loggers (aiokafka, asyncpg, aiohttp) go through structlog's
``ProcessorFormatter`` with the same processors, so that every line on the stream has
the same shape: one JSON object with ``timestamp``, ``level`` and ``event`` (plus
``logger`` for a library's line), or one console line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog

from worker.reachability import ClientLogFilter
from worker.settings import LogFormat, LogLevel


def _json_text(obj: Any, **_: Any) -> str:
    """orjson for the standard library's lines, which the formatter must return as text."""
    return orjson.dumps(obj, default=str).decode()


def configure(
    level: LogLevel, fmt: LogFormat, stream: TextIO | None = None, *, trace_ids: bool = False
) -> None:
    """``trace_ids``: tracing is on, and a line written inside a sampled span carries
    its ``trace_id`` and ``span_id`` (worker/tracing_sdk.py ``log_trace_ids``)."""
    out = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if trace_ids:
        from worker.tracing_sdk import log_trace_ids  # noqa: PLC0415 - the SDK only when on

        shared.append(log_trace_ids)
    # One line per event is written at full throughput: orjson straight to the byte
    # stream costs about a quarter of the standard JSON renderer.
    processors: list[structlog.typing.Processor]
    renderer: structlog.typing.Processor
    if as_json:
        processors = [
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        renderer = structlog.processors.JSONRenderer(serializer=_json_text)
        factory: Any = structlog.BytesLoggerFactory(out.buffer)
    else:
        # rich's tracebacks list every frame's locals by default: request headers,
        # tokens, connection URLs. Where it failed, never what it held.
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(),
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
        )
        processors = [*shared, renderer]
        factory = structlog.PrintLoggerFactory(out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # The libraries' own records: same keys, same renderer, same stream. Their INFO
    # chatter (aiokafka's every join and rebalance) stays out: warnings and above only.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([structlog.processors.format_exc_info] if as_json else []),
                renderer,
            ],
        )
    )
    # A Kafka outage is one state change, not 70 client lines a second (the filter
    # hands them to worker/reachability.py, which hears the recovery at DEBUG)
    handler.addFilter(ClientLogFilter(numeric))
    logging.getLogger(ClientLogFilter.LISTENS_TO).setLevel(logging.DEBUG)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
