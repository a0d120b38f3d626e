"""Tracing's rules against the SDK's in-memory exporter: the trace context every
produced record carries (and replaces), the worker batch's links and its events' spans,
what is redacted, and that with tracing off nothing of OpenTelemetry is even imported."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from worker import tracing
from worker.events import RawRecord
from worker.kafka import Message, Producer
from worker.settings import load_settings
from worker.tracing_sdk import (
    OtelTracer,
    RedactingProcessor,
    kafka_headers,
    log_trace_ids,
    record_context,
    sampler,
)

TOPIC = "ocitag.events"


@pytest.fixture
def exported() -> Iterator[tuple[OtelTracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RedactingProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OtelTracer(provider)
    tracing.install(tracer)
    try:
        yield tracer, exporter
    finally:
        tracing.install(None)
        provider.shutdown()


def _traceparent(span: ReadableSpan | trace.Span) -> bytes:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}".encode()


def _header(headers: list[tuple[str, bytes]], name: str) -> list[bytes]:
    return [value for key, value in headers if key == name]


def _producer_span(tracer: OtelTracer, name: str = "send ingest") -> trace.Span:
    return tracer._tracer.start_span(name, kind=SpanKind.PRODUCER)


def _record(offset: int, headers: list[tuple[str, bytes]], value: bytes = b"{}") -> RawRecord:
    return RawRecord(TOPIC, 0, offset, 0, b"key", value, tuple(headers))


# ---- producing: the send span and the headers


def test_one_send_span_per_call_and_every_record_carries_it(
    exported: tuple[OtelTracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = exported
    with tracer.sending(
        [Message(TOPIC, b"a", b"1", [("ce_id", b"x")]), Message(TOPIC, b"b", b"2", [])]
    ) as out:
        pass
    (span,) = exporter.get_finished_spans()
    assert span.name == f"send {TOPIC}" and span.kind is SpanKind.PRODUCER
    assert span.attributes is not None
    assert span.attributes["messaging.system"] == "kafka"
    assert span.attributes["messaging.operation.type"] == "send"
    assert span.attributes["messaging.destination.name"] == TOPIC
    assert span.attributes["messaging.batch.message_count"] == 2
    for message in out:
        assert _header(message.headers, "traceparent") == [_traceparent(span)]
    assert _header(out[0].headers, "ce_id") == [b"x"]
    assert not span.links


def test_records_with_their_own_traceparent_keep_it_and_the_send_span_links_to_each(
    exported: tuple[OtelTracer, InMemorySpanExporter],
) -> None:
    """The worker's outcomes (each its event's span) and a dead letter (the copied
    record's own) keep theirs; the one without gets the send span's."""
    tracer, exporter = exported
    first, second = _producer_span(tracer, "event a"), _producer_span(tracer, "event b")
    messages = [
        Message("ocitag.outcomes", b"a", b"1", kafka_headers(trace.set_span_in_context(first))),
        Message("ocitag.outcomes", b"b", b"2", kafka_headers(trace.set_span_in_context(second))),
        Message("ocitag.outcomes", b"c", b"3", []),
    ]
    with tracer.sending(messages) as out:
        pass
    (send,) = exporter.get_finished_spans()
    assert [_header(m.headers, "traceparent") for m in out] == [
        [_traceparent(first)],
        [_traceparent(second)],
        [_traceparent(send)],
    ]
    assert {link.context.span_id for link in send.links} == {
        first.get_span_context().span_id,
        second.get_span_context().span_id,
    }


def test_the_send_span_is_a_child_of_the_current_span(
    exported: tuple[OtelTracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = exported
    with (
        tracer._tracer.start_as_current_span("POST /webhooks/{kind}") as request,
        tracer.sending([Message(TOPIC, b"k", b"1", [])]),
    ):
        pass
    send = next(s for s in exporter.get_finished_spans() if s.name.startswith("send"))
    assert send.parent is not None
    assert send.parent.span_id == request.get_span_context().span_id
    assert send.attributes is not None and send.attributes["messaging.kafka.message.key"] == "k"


def test_a_failed_send_marks_its_span(exported: tuple[OtelTracer, InMemorySpanExporter]) -> None:
    tracer, exporter = exported
    with (
        pytest.raises(ConnectionError),
        tracer.sending([Message(TOPIC, None, b"1", [])]),
    ):
        raise ConnectionError("broker away")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR


async def test_the_producer_sends_the_headers_of_its_span(
    exported: tuple[OtelTracer, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one Producer path: what reaches the Kafka client carries the send span."""
    _, exporter = exported
    producer = Producer(load_settings({}, environ={}), component="ingest", action="publishing")
    sent: list[list[tuple[str, bytes]]] = []

    async def send(topic: str, value: bytes, *, key: bytes, headers: Any) -> asyncio.Future[None]:
        sent.append(headers)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    monkeypatch.setattr(producer._producer, "send", send)
    try:
        await producer.send_each([Message(TOPIC, b"k", b"v", [("ce_id", b"1")])])
    finally:
        await producer.stop()
    (span,) = exporter.get_finished_spans()
    assert sent == [[("ce_id", b"1"), ("traceparent", _traceparent(span))]]


# ---- consuming: the worker's batch and its events


def test_a_batch_links_every_producer_and_each_event_continues_its_own_trace(
    exported: tuple[OtelTracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = exported
    producers = [_producer_span(tracer, f"send {n}") for n in range(2)]
    records = [
        _record(7, kafka_headers(trace.set_span_in_context(producers[0]))),
        _record(8, []),  # sent without tracing: a trace of its own
        _record(9, kafka_headers(trace.set_span_in_context(producers[1]))),
    ]
    problem = orjson.dumps({"data": {"type": "https://p.example/problems/invalid-event"}})
    events = [type("E", (), {"id": f"id-{n}", "source": "urn:s"})() for n in range(3)]
    with tracer.batch(records, "ocitag-worker") as batch:
        with tracer._tracer.start_as_current_span("INSERT"):
            pass  # a database statement inside the batch
        outcomes = [batch.message(n, Message("ocitag.outcomes", None, b"", [])) for n in range(3)]
    batch.finish(events, [(200, b"{}"), (422, problem), (200, b"{}")])
    spans = {
        (s.name, s.attributes.get("messaging.kafka.offset") if s.attributes else None): s
        for s in exporter.get_finished_spans()
    }
    whole = spans[(f"process {TOPIC}", None)]
    first, second, third = (spans[(f"process {TOPIC}", n)] for n in (7, 8, 9))
    ids = [p.get_span_context() for p in producers]
    # the batch: many parents, as links; records of two traces: a root of its own (two
    # unrelated events share no trace)
    assert {link.context.span_id for link in whole.links} == {c.span_id for c in ids}
    assert whole.parent is None and whole.context.trace_id not in {c.trace_id for c in ids}
    assert whole.attributes is not None and whole.attributes["messaging.batch.message_count"] == 3
    statement = spans[("INSERT", None)].parent
    assert statement is not None and statement.span_id == whole.context.span_id
    # each event: child of its producer span, linked to the batch, named by its id
    assert first.parent is not None and first.parent.span_id == ids[0].span_id
    assert third.parent is not None and third.parent.span_id == ids[1].span_id
    # a record sent without tracing: its event span is the batch's child
    assert second.parent is not None and second.parent.span_id == whole.context.span_id
    for span, n in ((first, 0), (second, 1), (third, 2)):
        assert [link.context.span_id for link in span.links] == [whole.context.span_id]
        assert span.attributes is not None
        assert span.attributes["messaging.message.id"] == f"id-{n}"
        assert span.attributes["cloudevents.event_id"] == f"id-{n}"
        assert span.kind is SpanKind.CONSUMER
    # a problem outcome marks its event's span with the problem type
    assert second.status.status_code is StatusCode.ERROR
    assert second.status.description == "https://p.example/problems/invalid-event"
    assert second.attributes is not None and second.attributes["error.type"] == (
        "https://p.example/problems/invalid-event"
    )
    assert first.status.status_code is StatusCode.UNSET
    # each outcome continues its event's trace
    assert _header(outcomes[1].headers, "traceparent") == [_traceparent(second)]
    assert batch.log_fields(0) == {
        "trace_id": format(first.context.trace_id, "032x"),
        "span_id": format(first.context.span_id, "016x"),
    }


def test_a_run_of_several_partitions_names_each_events_partition_and_the_batch_none(
    exported: tuple[OtelTracer, InMemorySpanExporter],
) -> None:
    """One fetch's partitions are one run (worker/batches.py): the batch span names a
    partition only when its records share one."""
    tracer, exporter = exported
    records = [
        RawRecord(TOPIC, 0, 7, 0, b"key", b"{}", ()),
        RawRecord(TOPIC, 3, 7, 0, b"key", b"{}", ()),
    ]
    events = [type("E", (), {"id": f"id-{n}", "source": "urn:s"})() for n in range(2)]
    for run in (records, records[1:]):
        with tracer.batch(run, "g") as batch:
            pass
        batch.finish(events[: len(run)], [(200, b"{}")] * len(run))
    named = [
        (
            (s.attributes or {}).get("messaging.kafka.offset"),
            (s.attributes or {}).get("messaging.destination.partition.id"),
        )
        for s in exporter.get_finished_spans()
    ]
    assert sorted(named, key=repr) == sorted(
        [(7, "0"), (7, "3"), (None, None), (7, "3"), (None, "3")], key=repr
    )


def test_an_event_whose_trace_is_not_kept_costs_no_span() -> None:
    """At 10 % sampling nine batches (and nine events sent from unsampled traces) in
    ten make no event span, and their outcomes carry no context of their own."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OtelTracer(provider)
    unsampled = "00-" + "1" * 32 + "-" + "2" * 16 + "-00"
    records = [_record(1, []), _record(2, [("traceparent", unsampled.encode())])]
    with tracer.batch(records, "g") as batch:
        outcome = batch.message(0, Message("ocitag.outcomes", None, b"", []))
    batch.finish([object(), object()], [(200, b""), (200, b"")])
    assert outcome.headers == []
    assert batch.log_fields(1) == {}
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


def test_a_batch_given_up_ends_its_spans_as_errors(
    exported: tuple[OtelTracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = exported
    with pytest.raises(TimeoutError), tracer.batch([_record(1, [])], "g"):
        raise TimeoutError
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    assert {s.status.status_code for s in spans} == {StatusCode.ERROR}


def test_an_outcome_handed_to_its_request_continues_the_outcome_trace(
    exported: tuple[OtelTracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = exported
    sent = _producer_span(tracer)
    tracer.delivered("ocitag.outcomes", kafka_headers(trace.set_span_in_context(sent)))
    (span,) = exporter.get_finished_spans()
    assert span.parent is not None and span.parent.span_id == sent.get_span_context().span_id
    assert span.attributes is not None and span.attributes["messaging.operation.type"] == "process"


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("traceparent", b"not a traceparent")],
        [("traceparent", b"\xff\xfe")],
        [("traceparent", b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01")],
    ],
)
def test_a_record_without_a_usable_traceparent_starts_a_trace(
    headers: list[tuple[str, bytes]],
) -> None:
    assert not trace.get_current_span(record_context(headers)).get_span_context().is_valid


# ---- redaction, logs, sampler, settings


def test_the_webhook_secret_never_leaves_in_a_span(
    exported: tuple[OtelTracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = exported
    tracer._tracer.start_span(
        "POST /webhooks/{kind}/{secret}",
        attributes={
            "url.path": "/webhooks/distribution/s3cret",
            "http.url": "http://h/webhooks/zot/s3cret?x=1",
        },
    ).end()
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["url.path"] == "/webhooks/distribution/{secret}"
    assert span.attributes["http.url"] == "http://h/webhooks/zot/{secret}?x=1"


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("/webhooks/distribution/abc", "/webhooks/distribution/{secret}"),
        ("/webhooks/distribution", "/webhooks/distribution"),
        ("https://i:8080/webhooks/gar/x%2Fy?z=1", "https://i:8080/webhooks/gar/{secret}?z=1"),
        ("/v1/tags/ghcr.io/a/b", "/v1/tags/ghcr.io/a/b"),
    ],
)
def test_redact_path(given: str, shown: str) -> None:
    assert tracing.redact_path(given) == shown


@given(
    st.text(
        alphabet=st.characters(
            whitelist_categories=("L", "N"), whitelist_characters="-._~%!$&'()*+,;=:@"
        ),
        min_size=1,
    )
)
def test_no_secret_survives_redaction(secret: str) -> None:
    assert tracing.redact_path(f"/webhooks/k/{secret}") == "/webhooks/k/{secret}"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (orjson.dumps({"data": {"type": "https://x/problems/a"}}), "https://x/problems/a"),
        (orjson.dumps({"data": {"ocitag_id": "x"}}), None),
        (b"not json", None),
        (orjson.dumps([1]), None),
        (None, None),
    ],
)
def test_problem_type(value: bytes | None, kind: str | None) -> None:
    assert tracing.problem_type(value) == kind


def test_log_lines_inside_a_sampled_span_carry_its_ids(
    exported: tuple[OtelTracer, InMemorySpanExporter],
) -> None:
    tracer, _ = exported
    assert "trace_id" not in log_trace_ids(None, "info", {"event": "x"})
    with tracer._tracer.start_as_current_span("work") as span:
        line = log_trace_ids(None, "info", {"event": "x"})
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")


def test_the_sampler_is_the_settings_one() -> None:
    settings = load_settings(
        {},
        environ={
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
    )
    built = sampler(settings.tracing)
    assert isinstance(built, ParentBased)
    assert "TraceIdRatioBased{0.1}" in built.get_description()  # type: ignore[no-untyped-call]
    assert isinstance(
        sampler(load_settings({}, environ={"OTEL_TRACES_SAMPLER": "traceidratio"}).tracing),
        TraceIdRatioBased,
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER (--otel-traces-exporter)"),
        ({"OTEL_TRACES_SAMPLER_ARG": "10"}, "OTEL_TRACES_SAMPLER_ARG (--otel-traces-sampler-arg)"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ],
)
def test_a_bad_tracing_setting_names_itself(environ: dict[str, str], message: str) -> None:
    from worker.errors import SettingsError

    with pytest.raises(SettingsError) as caught:
        load_settings({}, environ=environ)
    assert message in str(caught.value)


def test_tracing_is_off_by_default_and_loads_nothing() -> None:
    """Off: not one OpenTelemetry module imported by any command's code, nor by
    starting (tracing.start is a no-op)."""
    code = (
        "import sys\n"
        "import worker.cli, worker.app, worker.ingest.app, worker.api.app, worker.reconcile.run\n"
        "from worker import tracing\n"
        "from worker.settings import load_settings\n"
        "tracing.start(load_settings({}, environ={}), 'run')\n"
        "assert tracing.current() is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ---- the picture of a trace (tools/trace_svg.py)


def test_a_trace_is_drawn_with_its_tree_its_links_and_its_errors() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "trace_svg.py"
    spec = importlib.util.spec_from_file_location("trace_svg", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def span(sid: str, name: str, start: int, refs: list[tuple[str, str]], **tags: Any) -> Any:
        return {
            "spanID": sid,
            "operationName": name,
            "startTime": start,
            "duration": 1000,
            "processID": "p1" if sid != "c" else "p2",
            "references": [{"refType": kind, "spanID": ref} for kind, ref in refs],
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }

    trace_json = {
        "traceID": "abc",
        "processes": {"p1": {"serviceName": "ingest"}, "p2": {"serviceName": "worker"}},
        "spans": [
            span("c", "process t", 3000, [("CHILD_OF", "b"), ("FOLLOWS_FROM", "b")]),
            span("a", "POST /webhooks/{kind}", 0, []),
            span("b", "send t", 1000, [("CHILD_OF", "a")], **{"otel.status_code": "ERROR"}),
        ],
    }
    svg = module.render(trace_json)
    order = [svg.index(f">{name}<") for name in ("POST /webhooks/{kind}", "send t", "process t")]
    assert order == sorted(order)  # parents above their children
    assert 'x="22"' in svg and 'x="36"' in svg  # indented by depth
    assert svg.count("stroke-dasharray") == 1  # the one link
    assert svg.count('fill="#d62728"') == 1  # the one error
    assert ">ingest<" in svg and ">worker<" in svg


def test_a_batch_of_one_trace_continues_it_and_an_unsampled_record_keeps_its_context(
    exported: tuple[OtelTracer, InMemorySpanExporter],
) -> None:
    """One upstream trace: the batch continues it (webhook to outcome in one trace). A
    record whose upstream decided not to sample gets no span, and its outcome carries
    that upstream context on (decision included), not the send span's."""
    tracer, exporter = exported
    producer = _producer_span(tracer, "send one")
    kept = kafka_headers(trace.set_span_in_context(producer))
    unsampled = trace.SpanContext(
        trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=trace.TraceFlags(0)
    )
    dropped = kafka_headers(trace.set_span_in_context(trace.NonRecordingSpan(unsampled)))
    event = type("E", (), {"id": "id-1", "source": "urn:s"})()
    with tracer.batch([_record(1, kept)], "ocitag-worker") as first:
        pass
    first.finish([event], [(200, b"{}")])
    whole = next(s for s in exporter.get_finished_spans() if s.name == f"process {TOPIC}")
    assert whole.parent is not None
    assert whole.parent.span_id == producer.get_span_context().span_id
    with tracer.batch([_record(2, dropped)], "ocitag-worker") as batch:
        outcome = batch.message(0, Message("ocitag.outcomes", None, b"", []))
    batch.finish([event], [(200, b"{}")])
    assert dict(outcome.headers)["traceparent"] == dict(dropped)["traceparent"]
