"""One trace from the registry's webhook to the outcome, in a real trace store: crane
pushes to the CNCF registry, whose notification reaches ingest; ingest, the worker and
the api run as processes with tracing on (OTLP/HTTP to Jaeger all-in-one), and Jaeger's
HTTP query API is read back. The trace's JSON is kept in the test's directory
(docs/tracing.md's picture is drawn from such a file by tools/trace_svg.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.api import TOKEN, api_overrides, api_processes
from tests.helpers.images import Crane
from tests.helpers.jaeger import Span, run_id, spans_of, traces, tracing_env
from tests.helpers.registry import Endpoint, Registry, free_port
from tests.helpers.wait import eventually
from worker.settings import Settings

WEBHOOK_TOKEN = "Bearer trace-t0ken"


def _one(spans: list[Span], test: Callable[[Span], bool], what: str) -> Span:
    found = [s for s in spans if test(s)]
    assert len(found) == 1, (what, [(s.service, s.name) for s in spans])
    return found[0]


async def _trace_with(
    query_url: str, service: str, wanted: Callable[[list[Span]], bool]
) -> dict[str, Any]:
    """The one trace of ``service`` whose spans satisfy ``wanted`` (spans arrive in
    Jaeger in batches: wait until they are all in)."""
    found: list[dict[str, Any]] = []

    async def complete() -> bool:
        found[:] = [t for t in await traces(query_url, service) if wanted(spans_of(t))]
        return len(found) == 1

    await eventually(complete, timeout=60)
    return found[0]


async def test_a_pushed_tag_is_one_trace_from_the_webhook_to_the_outcome(
    make_settings: Callable[..., Settings], registry_tools: Path, jaeger: str, tmp_path: Path
) -> None:
    run = run_id()
    ingest, worker = f"ocitag-ingest-{run}", f"ocitag-worker-{run}"
    settings = make_settings(
        ingest_port=free_port(),
        ingest_host="127.0.0.1",
        ingest_distribution_secret=WEBHOOK_TOKEN,
        ingest_deadline_seconds=5.0,
    )
    events, outcomes = settings.topics.input_topic, settings.topics.outcome_topic
    url = f"http://127.0.0.1:{settings.ingest.ingest_port}/webhooks/distribution"
    commands = (("run", {"http_port": 0}), ("ingest", {"http_port": 0}))
    env = {"run": tracing_env(worker), "ingest": tracing_env(ingest)}
    endpoint = Endpoint(url, headers={"Authorization": WEBHOOK_TOKEN})
    with (
        api_processes(settings, tmp_path, commands, env),
        Registry(endpoints=[endpoint]) as registry,
    ):
        crane = Crane(registry)
        await eventually(lambda: _listening(settings.ingest.ingest_port), timeout=60)
        await asyncio.to_thread(
            crane.run, "append", "--new_layer", "/dev/null", "-t", crane.ref("team/app", "v1")
        )

        def whole(spans: list[Span]) -> bool:
            """Every span the test reads is in (each is exported when it ends)."""
            names = {(s.service, s.name) for s in spans}
            return {(worker, f"send {outcomes}"), (ingest, f"send {events}")} <= names and all(
                any(key in s.tags for s in spans)
                for key in ("messaging.batch.message_count", "messaging.message.id", "db.system")
            )

        trace = await _trace_with(jaeger, ingest, whole)
    (tmp_path / "trace.json").write_text(json.dumps(trace), encoding="utf-8")
    spans = spans_of(trace)
    request = _one(
        spans, lambda s: s.service == ingest and s.tags.get("span.kind") == "server", "request"
    )
    assert request.name.startswith("POST /webhooks/{kind}")
    produce = _one(spans, lambda s: s.name == f"send {events}", "ingest's send")
    assert produce.service == ingest and produce.tags["messaging.system"] == "kafka"
    assert produce.tags["span.kind"] == "producer"
    batch = _one(spans, lambda s: "messaging.batch.message_count" in s.tags, "worker's batch")
    assert batch.service == worker and batch.name == f"process {events}"
    assert produce.span_id in batch.links  # linked to the producer span (a batch has many)
    event = _one(
        spans,
        lambda s: s.service == worker and "messaging.message.id" in s.tags,
        "the event's process span",
    )
    assert event.parent == produce.span_id and batch.span_id in event.links
    assert event.tags["cloudevents.event_id"] == event.tags["messaging.message.id"]
    database = [s for s in spans if s.tags.get("db.system") == "postgresql"]
    assert database and all(s.parent == batch.span_id for s in database)
    assert all(s.service == worker for s in database)
    outcome = _one(spans, lambda s: s.name == f"send {outcomes}", "the outcome's send")
    assert outcome.parent == batch.span_id and outcome.service == worker
    assert event.span_id in outcome.links  # the outcome record carries its event's span
    assert not any("/webhooks/distribution/" in json.dumps(s.tags) for s in spans)


async def test_a_put_through_the_api_is_one_trace_that_ends_with_its_answer(
    make_settings: Callable[..., Settings], jaeger: str, tmp_path: Path
) -> None:
    run = run_id()
    api, worker = f"ocitag-api-{run}", f"ocitag-worker-{run}"
    # a loaded machine: the first PUT waits for the worker's start (its group's join)
    settings = make_settings(**api_overrides(api_port=free_port(), api_timeout_seconds=60))
    env = {"run": tracing_env(worker), "api": tracing_env(api)}
    base = f"http://127.0.0.1:{settings.api.api_port}"
    tag = f"registry.example/trace/app-{run}:v1"
    with api_processes(settings, tmp_path, env=env):
        answers: list[tuple[int, str]] = []

        async def put() -> bool:
            """The PUT, once the api reaches Kafka (a 503 before it publishes nothing)."""
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.put(
                        f"{base}/ocitags/{tag}/",
                        json={"artifact": "sha256:" + "a" * 64},
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    ) as answer,
                ):
                    answers.append((answer.status, await answer.text()))
            except aiohttp.ClientError:
                return False
            return answers[-1][0] != 503

        await eventually(put, timeout=90)
        assert answers[-1][0] == 200, answers[-1]  # applied: the record

        def whole(spans: list[Span]) -> bool:
            """Every span the test reads is in (each is exported when it ends)."""
            names = {(s.service, s.name) for s in spans}
            wanted = {
                (api, f"process {settings.topics.outcome_topic}"),
                (api, f"send {settings.topics.input_topic}"),
                (worker, f"send {settings.topics.outcome_topic}"),
            }
            return (
                wanted <= names
                and any("messaging.message.id" in s.tags for s in spans)
                and any(s.tags.get("span.kind") == "server" for s in spans)
            )

        trace = await _trace_with(jaeger, api, whole)
    spans = spans_of(trace)
    request = _one(spans, lambda s: s.tags.get("span.kind") == "server", "the api's request")
    assert request.service == api and request.parent is None and request.name.startswith("PUT ")
    assert (
        request.tags.get("http.response.status_code", request.tags.get("http.status_code")) == 200
    )
    produced = _one(spans, lambda s: s.name == f"send {settings.topics.input_topic}", "send")
    assert produced.parent == request.span_id
    heard = _one(spans, lambda s: s.service == api and s.name.startswith("process "), "outcome")
    event = _one(spans, lambda s: "messaging.message.id" in s.tags, "the worker's event span")
    sent = _one(spans, lambda s: s.name == f"send {settings.topics.outcome_topic}", "outcome")
    assert sent.service == worker and event.span_id in sent.links
    assert heard.parent == event.span_id  # the outcome's traceparent: its event's span
    assert event.parent == produced.span_id
    # the trace ends with the api's answer: the request's span ends after the outcome was
    # heard, and after every span of the api (the worker's batch and event spans close
    # once its outcome is acknowledged, which may be a moment after the api heard it)
    on_the_way = [produced, heard, *(s for s in spans if s.service == api)]
    assert request.end_us == max(s.end_us for s in on_the_way)
    assert sent.start_us <= heard.start_us <= request.end_us


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
