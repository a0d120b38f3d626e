"""Tracing while it is on: the OpenTelemetry SDK, the maintained instrumentations, and
the Kafka spans the product writes itself. Imported only by ``tracing.start()``.

What comes from where:

- HTTP servers (ingest, the api): opentelemetry-instrumentation-aiohttp-server's
  middleware (``http.*``; an incoming ``traceparent`` continues its trace), added to
  those two applications only: the probes' server stays untraced.
- PostgreSQL: opentelemetry-instrumentation-asyncpg (``db.*``, one span a statement).
- The registry client (ingest's digest look-ups, reconcile's scans):
  opentelemetry-instrumentation-httpx, as the client is httpx, not aiohttp's.
- Kafka: written here. opentelemetry-instrumentation-aiokafka wraps ``send()`` and
  ``getone()``/``getmany()`` only; the product packs its records with
  ``create_batch()``/``send_batch()``, which it does not see (those records would leave
  without a ``traceparent``), its ``getmany()`` makes a span per record and per
  partition on every poll, and it has no ``process`` span. Here: one ``send`` span a
  producer call (the ``traceparent`` of every record it writes), one ``process`` span a
  worker batch, linked to every record's producer span, and one ``process`` span per
  event, child of its producer span, named by its CloudEvents id.

The spans follow the messaging conventions' attribute names (``messaging.system``,
``messaging.operation.type``, ``messaging.destination.name``,
``messaging.consumer.group.name``, ``messaging.batch.message_count``,
``messaging.message.id``), written as literals: the semantic-conventions package keeps
them in its incubating modules, which change names between releases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_server import (
    AioHttpServerInstrumentor,
    create_aiohttp_middleware,
)
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker.events import RawRecord
from worker.kafka import Message
from worker.settings import Settings, TracingSettings
from worker.tracing import (
    BatchTrace,
    problem_type,
    redact_path,
    trace_carrier,
    without_trace_headers,
)

_PROPAGATOR = TraceContextTextMapPropagator()
_KAFKA = "kafka"
#: span attributes that can hold a request's path (old and stable HTTP conventions)
_URL_ATTRIBUTES = ("url.path", "url.full", "http.target", "http.url")


def sampler(settings: TracingSettings) -> Sampler:
    """OTEL_TRACES_SAMPLER and its argument, as the SDK's environment reading would
    build them (here from the one settings object, checked at start)."""
    name, ratio = settings.otel_traces_sampler, settings.otel_traces_sampler_arg
    root: Sampler = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
    }[name.removeprefix("parentbased_")]
    return ParentBased(root) if name.startswith("parentbased_") else root


def resource(service_name: str) -> Resource:
    """The SDK's resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME), with the
    command's name as ``service.name`` when neither names one."""
    detected = Resource.create()
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        return detected.merge(Resource({"service.name": service_name}))
    return detected


class RedactingProcessor(SpanProcessor):
    """Replaces ingest's path secret in a server span's URL attributes as the span
    starts, before any exporter can see it."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for key in _URL_ATTRIBUTES:
            value = (span.attributes or {}).get(key)
            if isinstance(value, str) and "/webhooks/" in value:
                span.set_attribute(key, redact_path(value))

    def on_end(self, span: ReadableSpan) -> None:
        return None


def kafka_headers(ctx: Context) -> list[tuple[str, bytes]]:
    """The ``traceparent`` (and ``tracestate``) of ``ctx``'s span, as Kafka headers."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    return [(name, value.encode("ascii")) for name, value in carrier.items()]


def record_context(headers: Sequence[tuple[str, bytes]]) -> Context:
    """The trace context a record's headers carry; empty (a new trace) when none."""
    carrier = trace_carrier(headers)
    return _PROPAGATOR.extract(carrier) if carrier else Context()


def carried(message: Message, mine: list[tuple[str, bytes]]) -> Message:
    """``message`` as sent: with its own ``traceparent`` if it has one, else the send
    span's (``mine``)."""
    if trace_carrier(message.headers):
        return message
    return message._replace(headers=[*message.headers, *mine])


def _span_context(ctx: Context) -> trace.SpanContext:
    return trace.get_current_span(ctx).get_span_context()


def log_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """structlog processor: the current span's ``trace_id``/``span_id`` on a line
    written inside a sampled span (the trace a reader can then open)."""
    found = trace.get_current_span().get_span_context()
    if found.is_valid and found.trace_flags.sampled:
        event.setdefault("trace_id", format(found.trace_id, "032x"))
        event.setdefault("span_id", format(found.span_id, "016x"))
    return event


class OtelTracer:
    """``tracing.Tracer`` on the SDK."""

    def __init__(self, provider: TracerProvider, *, middleware: Any = None) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("ocitag-worker")
        self._middleware = middleware
        self._instrumentors: list[Any] = []

    @classmethod
    def create(cls, settings: Settings, service_name: str) -> OtelTracer:
        """The SDK with its OTLP/HTTP exporter (OTEL_EXPORTER_OTLP_* read by the
        exporter), and the instrumentations installed."""
        provider = TracerProvider(
            sampler=sampler(settings.tracing), resource=resource(service_name)
        )
        provider.add_span_processor(RedactingProcessor())
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        # The aiohttp instrumentor's middleware reads module state its instrument()
        # sets; instrument() also replaces web.Application for every application made
        # later, the probes' included: put the class back, and add the middleware to
        # the two servers that answer callers (tracing.server_middlewares()).
        server = AioHttpServerInstrumentor()
        server.instrument(tracer_provider=provider)
        server.uninstrument()
        tracer = cls(provider, middleware=create_aiohttp_middleware(tracer_provider=provider))
        for instrumentor in (AsyncPGInstrumentor(), HTTPXClientInstrumentor()):  # type: ignore[no-untyped-call]
            instrumentor.instrument(tracer_provider=provider)
            tracer._instrumentors.append(instrumentor)
        return tracer

    def middleware(self) -> Any:
        return self._middleware

    def shutdown(self) -> None:
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()
        self._provider.shutdown()

    @contextlib.contextmanager
    def sending(self, messages: Sequence[Message]) -> Iterator[list[Message]]:
        """One ``send`` span for the call, child of the current span. A record that
        carries its own ``traceparent`` (the worker's outcome: its event's span; a dead
        letter: where the record was made) keeps it, and the span links to it; every
        other record carries the span itself."""
        topics = list(dict.fromkeys(m.topic for m in messages))
        carried_contexts = [record_context(m.headers) for m in messages if trace_carrier(m.headers)]
        links = [Link(c) for c in map(_span_context, carried_contexts) if c.is_valid]
        attributes: dict[str, Any] = {
            "messaging.system": _KAFKA,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
        }
        # semantic conventions: a destination only when the batch has one; the worker's
        # send of outcomes with their state records names both in a span called "send"
        if len(topics) == 1:
            attributes["messaging.destination.name"] = topics[0]
        else:
            attributes["ocitag.destinations"] = topics
        if len(messages) > 1:
            attributes["messaging.batch.message_count"] = len(messages)
        elif messages and messages[0].key is not None:
            attributes["messaging.kafka.message.key"] = messages[0].key.decode("utf-8", "replace")
        with self._tracer.start_as_current_span(
            " ".join(["send", *topics[:1]]) if len(topics) == 1 else "send",
            kind=SpanKind.PRODUCER,
            links=links,
            attributes=attributes,
        ) as span:
            mine = kafka_headers(trace.set_span_in_context(span))
            yield [carried(m, mine) for m in messages]

    def batch(self, records: Sequence[RawRecord], group: str) -> BatchTrace:
        return OtelBatch(self._tracer, records, group)

    def delivered(self, topic: str, headers: Sequence[tuple[str, bytes]]) -> None:
        span = self._tracer.start_span(
            f"process {topic}",
            context=record_context(headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": _KAFKA,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": topic,
            },
        )
        span.end()


class OtelBatch:
    """The spans of one worker run (``tracing.BatchTrace``; a run is one fetch's small
    partition batches together, worker/batches.py): the batch's ``process``
    span continues the trace of its first record that carries one and links to every
    record's producer span (a batch has many parents). Each event has a ``process`` span
    of its own, child of its producer span (of the batch's, for a record sent without
    one) and linked to the batch's, when that parent is sampled: an event whose trace is
    not kept costs no span (at 10 % sampling, nine events in ten)."""

    def __init__(self, tracer: trace.Tracer, records: Sequence[RawRecord], group: str) -> None:
        parents = [record_context(r.headers) for r in records]
        first = records[0] if records else None
        topic = first.topic if first else ""
        base: dict[str, Any] = {
            "messaging.system": _KAFKA,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": topic,
            "messaging.consumer.group.name": group,
        }
        # a run may hold several partitions (worker/batches.py): the batch's span names
        # one only when its records share it; each event's span names its own
        partitions = {r.partition for r in records}
        batch_attributes = {**base, "messaging.batch.message_count": len(records)}
        if len(partitions) == 1:
            batch_attributes["messaging.destination.partition.id"] = str(partitions.pop())
        found = [_span_context(p) for p in parents]
        links = [Link(c) for c in found if c.is_valid]
        # one upstream trace (a batch of one, or records of one trace): continue it; records
        # of several traces: a new root, linked to each (unrelated events share no trace)
        traces = {c.trace_id for c in found if c.is_valid}
        root = (
            next(p for p, c in zip(parents, found, strict=True) if c.is_valid)
            if len(traces) == 1
            else Context()
        )
        self._span = tracer.start_span(
            f"process {topic}",
            context=root,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes=batch_attributes,
        )
        batch = trace.set_span_in_context(self._span)
        batch_sampled = self._span.get_span_context().trace_flags.sampled
        batch_link = [Link(self._span.get_span_context())]
        self._parents = parents
        self._events: list[trace.Span | None] = []
        for record, parent, context in zip(records, parents, found, strict=True):
            sampled = context.trace_flags.sampled if context.is_valid else batch_sampled
            self._events.append(
                tracer.start_span(
                    f"process {topic}",
                    context=parent if context.is_valid else batch,
                    kind=SpanKind.CONSUMER,
                    links=batch_link,
                    attributes={
                        **base,
                        "messaging.destination.partition.id": str(record.partition),
                        "messaging.kafka.offset": record.offset,
                    },
                )
                if sampled
                else None
            )
        self._token: object | None = None

    def __enter__(self) -> BatchTrace:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object, /) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        if exc is not None:  # given up (revoked, stopping) or a bug: redelivered later
            for span in (*self._events, self._span):
                if span is not None:
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    span.end()

    def message(self, index: int, message: Message) -> Message:
        span = self._events[index]
        if span is None:
            upstream = self._parents[index]
            if not _span_context(upstream).is_valid:  # no trace came in: the send span's
                return message
            # not sampled upstream: the record carries the upstream context on, with its
            # decision, rather than the send span's (which is another event's trace)
            event = kafka_headers(upstream)
        else:
            event = kafka_headers(trace.set_span_in_context(span))
        return message._replace(headers=[*without_trace_headers(message.headers), *event])

    def finish(self, events: Sequence[object], statuses: Sequence[tuple[int, bytes]]) -> None:
        for span, event, (status, value) in zip(self._events, events, statuses, strict=True):
            if span is None:
                continue
            if span.is_recording():
                _describe(span, event, status)
                if status >= 400:
                    kind = problem_type(value) or str(status)
                    span.set_attribute("error.type", kind)
                    span.set_status(Status(StatusCode.ERROR, kind))
            span.end()
        self._span.end()

    def log_fields(self, index: int) -> dict[str, str]:
        span = self._events[index]
        found = span.get_span_context() if span is not None else None
        if found is None or not found.trace_flags.sampled:
            return {}
        return {
            "trace_id": format(found.trace_id, "032x"),
            "span_id": format(found.span_id, "016x"),
        }


def _describe(span: trace.Span, event: object, status: int) -> None:
    """An event span's CloudEvents attributes and outcome status."""
    event_id = getattr(event, "id", None)
    if isinstance(event_id, str):
        span.set_attribute("messaging.message.id", event_id)
        span.set_attribute("cloudevents.event_id", event_id)
    for attribute, name in (("source", "cloudevents.event_source"), ("ocitag_id", "ocitag.id")):
        value = getattr(event, attribute, None)
        if isinstance(value, str):
            span.set_attribute(name, value)
    span.set_attribute("ocitag.outcome.status", status)
