"""Tracing's switch, and the pure rules around it.

Off by default, and then nothing of OpenTelemetry is imported, initialised or installed:
every traced place asks ``tracing.current()`` once per call, batch or request, and takes
its untraced path on ``None`` (the cost ``make bench-tracing`` measures). On with
``OTEL_TRACES_EXPORTER=otlp`` (``settings.tracing``): ``start()`` builds the SDK, its
exporter and the instrumentations once, before the command opens anything
(worker/tracing_sdk.py), and ``stop()`` flushes what is left when it ends.

The hop's trace context travels as W3C ``traceparent``/``tracestate`` Kafka headers
(and HTTP headers): the one ``Producer`` writes them on every record it sends that has
none yet, so every topic the product writes carries them, whoever builds the records.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from aiohttp import web

    from worker.events import RawRecord
    from worker.kafka import Message
    from worker.settings import Settings

#: the W3C Trace Context headers, as Kafka header names (lower case, as HTTP/2 sends them)
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADERS = frozenset({TRACEPARENT, TRACESTATE})

#: each command's default ``service.name`` (OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES
#: replace it)
SERVICE_NAMES = {
    "run": "ocitag-worker",
    "ingest": "ocitag-ingest",
    "api": "ocitag-api",
    "reconcile": "ocitag-reconcile",
}


class BatchTrace(Protocol):
    """The spans of one worker batch: entered around the batch's work (the database
    spans become its children), finished with the batch's outcomes."""

    def __enter__(self) -> BatchTrace: ...

    def __exit__(self, exc_type: object, exc: object, tb: object, /) -> None: ...

    def message(self, index: int, message: Message) -> Message:
        """``message`` (the outcome of the batch's ``index``-th record) with that event's
        span as its ``traceparent``, which the producer keeps."""
        ...

    def finish(self, events: Sequence[object], statuses: Sequence[tuple[int, bytes]]) -> None:
        """Name each event's span by its CloudEvents id and mark it with its outcome's
        status (and problem type); end every span."""
        ...

    def log_fields(self, index: int) -> dict[str, str]:
        """``trace_id``/``span_id`` of the ``index``-th event's span, for its log line."""
        ...


class Tracer(Protocol):
    """What the traced places call while tracing is on (worker/tracing_sdk.py)."""

    def sending(self, messages: Sequence[Message]) -> AbstractContextManager[list[Message]]:
        """The ``send`` span around one producer call; yields the messages with their
        trace context headers."""
        ...

    def batch(self, records: Sequence[RawRecord], group: str) -> BatchTrace: ...

    def delivered(self, topic: str, headers: Sequence[tuple[str, bytes]]) -> None:
        """A record read and handed over (the api's outcome resolving its request)."""
        ...

    def middleware(self) -> web.RequestHandler | Any: ...

    def shutdown(self) -> None: ...


class _Active:
    tracer: Tracer | None = None


def current() -> Tracer | None:
    """The tracer when tracing is on, else None (the one check of the untraced path)."""
    return _Active.tracer


def start(settings: Settings, command: str) -> None:
    """Turn tracing on for ``command`` if the settings say so; idempotent."""
    if not settings.tracing.enabled or _Active.tracer is not None:
        return
    from worker.tracing_sdk import OtelTracer  # noqa: PLC0415 - the SDK only when on

    _Active.tracer = OtelTracer.create(settings, SERVICE_NAMES.get(command, "ocitag-worker"))


def stop() -> None:
    """Export what is left and turn tracing off."""
    tracer, _Active.tracer = _Active.tracer, None
    if tracer is not None:
        tracer.shutdown()


def install(tracer: Tracer | None) -> None:
    """Set the tracer directly (unit tests, with an in-memory exporter)."""
    _Active.tracer = tracer


def server_middlewares() -> list[Any]:
    """The HTTP server span middleware, outermost, when tracing is on; else none."""
    tracer = _Active.tracer
    return [] if tracer is None else [tracer.middleware()]


# ---- pure rules


def without_trace_headers(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """``headers`` less any trace context: a record gets one ``traceparent``, never two."""
    return [(name, value) for name, value in headers if name.lower() not in TRACE_HEADERS]


def trace_carrier(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """The trace context headers of a Kafka record, as the propagator reads them; an
    undecodable value is left out (the record then starts a trace of its own)."""
    carrier: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in TRACE_HEADERS:
            try:
                carrier[lowered] = value.decode("ascii")
            except UnicodeDecodeError:
                continue
    return carrier


def problem_type(value: bytes | None) -> str | None:
    """The problem ``type`` of an outcome's value (``data.type``), or None when it holds
    none: read only for a traced outcome of status 400 or above."""
    if not value:
        return None
    try:
        outcome = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    data = outcome.get("data") if isinstance(outcome, dict) else None
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


_WEBHOOK_SECRET = re.compile(r"(/webhooks/[^/?#\s]+/)[^/?#\s]+")


def redact_path(text: str) -> str:
    """A URL or path with ingest's path secret (``/webhooks/<kind>/<secret>``) replaced
    by ``{secret}``: spans leave the process, secrets never do."""
    return _WEBHOOK_SECRET.sub(r"\1{secret}", text)
