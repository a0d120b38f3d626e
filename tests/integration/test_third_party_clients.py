"""The worker with Kafka clients nobody on the team wrote: events produced by kcat in
both CloudEvents content modes (structured, and binary through ``-H`` headers) and by the
CloudEvents SDK's Kafka binding, outcomes read back by kcat and by Kafka's Java
ConsoleConsumer, and each outcome read by the CloudEvents SDK."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cloudevents.core.bindings.kafka import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from tests.helpers.clients import console_consume, kcat_consume, kcat_produce
from tests.helpers.cloudevents_sdk import sdk_errors
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
