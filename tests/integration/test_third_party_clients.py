"""The worker with clients nobody on the team wrote: events produced by kcat in both
CloudEvents content modes (structured, and binary through ``-H`` headers) and by the
CloudEvents SDK's Kafka binding, outcomes read back by kcat and by Kafka's Java
ConsoleConsumer, and each outcome read by the CloudEvents SDK; the api driven by curl,
as its users type it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.kafka import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from tests.helpers.api import TOKEN, api_overrides, running_api
from tests.helpers.clients import console_consume, kcat_consume, kcat_produce
from tests.helpers.cloudevents_sdk import sdk_errors
from tests.helpers.contract import errors_of, seed_validator
from tests.helpers.events import HEX, event
from tests.helpers.harness import running_worker, structured
from worker.settings import Settings

pytestmark = pytest.mark.integration

STRUCTURED = "application/cloudevents+json"


def _binary_headers(event_id: str) -> list[tuple[str, str]]:
    return [
        ("ce_specversion", "1.0"),
        ("ce_id", event_id),
        ("ce_source", "urn:kcat"),
        ("ce_type", "ocitag.moved.v1"),
        ("ce_time", "2026-11-28T15:00:00Z"),
        ("content-type", "application/json"),
    ]


async def test_kcat_events_in_both_modes_and_outcomes_read_by_kcat_and_the_sdk(
    make_settings: Callable[..., Settings], kcat: str, tmp_path: Path
) -> None:
    settings = make_settings(topic_partitions=1)
    bootstrap, topic = settings.kafka.kafka_bootstrap_servers, settings.topics.input_topic
    whole = tmp_path / "structured.json"
    whole.write_text(json.dumps(event("kcat-structured", actor="kcat")))
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"repository": "istio/pilot", "tag": "1.4.0", "artifact": HEX}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"repository": "istio/pilot", "tag": "-bad", "artifact": HEX}))
    async with running_worker(settings) as worker:
        kcat_produce(
            bootstrap,
            topic,
            whole,
            key="docker.io/istio/pilot:1.3.0",
            headers=[("content-type", STRUCTURED)],
        )
        kcat_produce(bootstrap, topic, data, headers=_binary_headers("kcat-binary"))
        kcat_produce(bootstrap, topic, bad, headers=_binary_headers("kcat-bad"))
        await worker.outcomes(3)  # also checked against the schemas and by the SDK
    read = kcat_consume(bootstrap, settings.topics.outcome_topic)
    assert len(read) == 3
    for record in read:
        assert ("content-type", STRUCTURED.encode()) in record.headers
        assert sdk_errors(record.key, record.value, record.headers) == []
    bodies = {json.loads(r.value)["causationid"]: (r.key, json.loads(r.value)) for r in read}
    key, body = bodies["kcat-structured"]
    assert (key, body["status"], body["change"], body["data"]["created_by"]) == (
        b"docker.io/istio/pilot:1.3.0",
        200,
        "created",
        "kcat",
    )
    key, body = bodies["kcat-binary"]
    assert (key, body["status"], body["causationsource"], body["data"]["tag"]) == (
        b"docker.io/istio/pilot:1.4.0",
        200,
        "urn:kcat",
        "1.4.0",
    )
    _, body = bodies["kcat-bad"]
    assert body["status"] == 422
    assert [e["location"] for e in body["data"]["errors"]] == ["body.tag"]


async def test_the_java_console_consumer_reads_outcomes_with_their_keys_and_headers(
    make_settings: Callable[..., Settings], kafka_console: Path
) -> None:
    settings = make_settings(topic_partitions=1)
    async with running_worker(settings) as worker:
        await worker.publish([structured(event("java-1"), key=b"docker.io/istio/pilot:1.3.0")])
        (outcome,) = await worker.outcomes(1)
    (line,) = console_consume(
        settings.kafka.kafka_bootstrap_servers, settings.topics.outcome_topic, 1
    )
    headers, key, value = line.split("\t", 2)
    assert headers == f"content-type:{STRUCTURED}"
    assert key.encode() == outcome.key == b"docker.io/istio/pilot:1.3.0"
    assert value.encode() == outcome.value
    assert sdk_errors(key.encode(), value.encode(), [("content-type", STRUCTURED.encode())]) == []


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_events_written_by_the_cloudevents_sdk_kafka_binding(
    make_settings: Callable[..., Settings], mode: str
) -> None:
    """The SDK's Kafka binding writes the key as text and adds its ``partitionkey``
    extension (as ``ce_partitionkey`` in binary mode): an ordinary extension attribute."""
    sent = CloudEvent(
        attributes={
            "specversion": "1.0",
            "id": f"sdk-{mode}",
            "source": "urn:sdk",
            "type": "ocitag.moved.v1",
            "time": datetime(2026, 11, 28, 15, 0, 0, 123456, tzinfo=UTC),
            "datacontenttype": "application/json",
            "partitionkey": "docker.io/istio/pilot:1.3.0",
        },
        data={"repository": "istio/pilot", "tag": "1.3.0", "artifact": f"sha256:{HEX}"},
    )
    convert = to_binary_event if mode == "binary" else to_structured_event
    message = convert(sent)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    headers = [(name, bytes(value)) for name, value in message.headers.items()]
    settings = make_settings(topic_partitions=1)
    async with running_worker(settings) as worker:
        await worker.publish([(key, message.value, headers)])
        (outcome,) = await worker.outcomes(1)
    assert outcome.key == b"docker.io/istio/pilot:1.3.0"
    body = outcome.body
    assert (body["status"], body["change"], body["causationid"]) == (200, "created", f"sdk-{mode}")
    assert body["data"]["created_on"] == "2026-11-28T15:00:00.123456Z"


async def _curl(curl: str, *args: str) -> tuple[int, dict[str, str], Any]:
    """``curl -si`` in a subprocess (the api runs in this event loop): the status, the
    headers (lower-case names) and the JSON body."""
    proc = await asyncio.create_subprocess_exec(
        curl, "-si", "-H", f"Authorization: Bearer {TOKEN}", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    head, _, body = out.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body) if body else None


def _but_date(answer: tuple[int, dict[str, str], Any]) -> tuple[int, dict[str, str], Any]:
    """The answer without its ``Date`` header (the second it was sent)."""
    status, headers, body = answer
    return status, {k: v for k, v in headers.items() if k != "date"}, body


def _problem(answer: tuple[int, dict[str, str], Any], status: int) -> dict[str, Any]:
    got, headers, body = answer
    assert (got, headers["content-type"]) == (status, "application/problem+json"), answer
    assert errors_of(seed_validator("ErrorModel"), body) == []
    problem: dict[str, Any] = body
    return problem


async def test_curl_writes_reads_and_gets_problems_in_its_own_words(
    make_settings: Callable[..., Settings], curl: str
) -> None:
    """What a curl user types: a keyed PUT retried and reused, a conditional PUT, ``-I``, ``?at=``
    with an offset's ``+`` as typed and as %2B, ``watch=1``, a tag's path without its
    ``/``. Each problem names where the caller put the value."""
    settings = make_settings(**api_overrides())
    async with running_worker(settings), running_api(settings) as api:
        url = f"{api.base}/ocitags/docker.io/team/curl:1.0/"
        put = ("-X", "PUT", "-H", "Content-Type: application/json", url)
        keyed = ("-H", "Idempotency-Key: curl-1", *put)
        first = await _curl(curl, *keyed, "-d", json.dumps({"artifact": f"sha256:{HEX}"}))
        status, headers, record = first
        assert (status, headers["etag"], record["artifact"]) == (200, '"1"', HEX)
        again = await _curl(curl, *keyed, "-d", json.dumps({"artifact": f"sha256:{HEX}"}))
        assert _but_date(again) == _but_date(first)  # a retry: the same answer, a new Date
        reused = _problem(await _curl(curl, *keyed, "-d", json.dumps({"artifact": "b" * 64})), 409)
        assert [e["location"] for e in reused["errors"]] == ["header.idempotency-key"]
        moved = await _curl(
            curl, "-H", 'If-Match: "1"', *put, "-d", '{"artifact": "' + "c" * 64 + '"}'
        )
        assert (moved[0], moved[1]["etag"]) == (200, '"2"')
        stale = await _curl(
            curl, "-H", 'If-Match: "1"', *put, "-d", '{"artifact": "' + "d" * 64 + '"}'
        )
        assert [e["location"] for e in _problem(stale, 412)["errors"]] == ["header.if-match"]
        # curl -I: whether a tag exists, from the GET's status and headers, no body
        status, headers, body = await _curl(curl, "-I", url)
        assert (status, headers["etag"], headers["content-type"], body) == (
            200,
            '"2"',
            "application/json",
            None,
        )
        status, headers, body = await _curl(curl, "-I", url.replace(":1.0/", ":none/"))
        assert (status, headers["content-type"], body) == (404, "application/problem+json", None)

        created = datetime.fromisoformat(record["created_on"]).isoformat()  # "+00:00"
        as_typed = _problem(await _curl(curl, f"{url}?at={created}"), 422)
        assert [e["location"] for e in as_typed["errors"]] == ["query.at"]
        assert "%2B" in as_typed["errors"][0]["message"]
        status, headers, then = await _curl(curl, f"{url}?at={created.replace('+', '%2B')}")
        assert (status, headers["etag"], then["artifact"]) == (200, '"1"', HEX)

        listing = f"{api.base}/ocitags/?repository=docker.io/team/curl"
        not_a_watch = _problem(await _curl(curl, f"{listing}&watch=1"), 422)
        assert [e["location"] for e in not_a_watch["errors"]] == ["query.watch"]
        unslashed = _problem(await _curl(curl, url.removesuffix("/")), 404)
        assert unslashed["detail"].endswith(
            f"a tag's path ends in '/': {url.removeprefix(api.base)}"
        )
