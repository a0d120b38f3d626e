"""structlog set-up: JSON lines when not on a terminal, readable console output on one.
Called once at start; nothing is configured at import time."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from worker.settings import LogFormat, LogLevel


def configure(level: LogLevel, fmt: LogFormat, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # aiokafka logs through the standard library: keep its warnings, in the same stream
    logging.basicConfig(stream=out, level=max(numeric, logging.WARNING), force=True)
