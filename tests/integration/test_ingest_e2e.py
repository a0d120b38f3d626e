"""Ingest end to end on real software: the CNCF Distribution registry v3 (htpasswd auth
on, notifications pointed at ingest with its Authorization header), crane pushing,
re-tagging and deleting, ingest and the worker running, outcomes read from Kafka."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.helpers.harness import Received, running_worker
from tests.helpers.images import Crane, Oras
from tests.helpers.ingest import load_delivery, running_ingest
from tests.helpers.registry import STACK, Endpoint, Registry, free_port
from tests.helpers.services import Services
from tests.helpers.wait import eventually
from worker import metrics
from worker.settings import Settings

TOKEN = "Bearer ingest-t0ken"
REPO = "team/app"


def ingest_settings(make_settings: Callable[..., Settings], **extra: object) -> Settings:
    values: dict[str, object] = {
        "ingest_port": free_port(),
        "ingest_host": "127.0.0.1",
        "ingest_distribution_secret": f"Bearer old-one,{TOKEN}",
        # a loaded 2-core test machine: the default 0.8 s is for production senders
        "ingest_deadline_seconds": 2.0,
        "topic_partitions": 3,
    }
    return make_settings(**{**values, **extra})


def registry_for(settings: Settings, **extra: object) -> Registry:
    url = f"http://127.0.0.1:{settings.ingest.ingest_port}/webhooks/distribution"
    return Registry(endpoints=[Endpoint(url, headers={"Authorization": TOKEN})], **extra)  # type: ignore[arg-type]


def changes(outcomes: list[Received]) -> dict[str, list[tuple[str, str | None]]]:
    """Per OCITag ID, in order: (outcome type, change)."""
    found: dict[str, list[tuple[str, str | None]]] = {}
    for outcome in sorted(outcomes, key=lambda o: (o.partition, o.offset)):
        body = outcome.body
        found.setdefault(body["subject"], []).append((body["type"], body.get("change")))
    return found


async def test_registry_pushes_tags_and_deletes_become_outcomes(
    make_settings: Callable[..., Settings], registry_tools: Path, database_url: str
) -> None:
    settings = ingest_settings(make_settings)
    async with running_worker(settings) as worker, running_ingest(settings):
        with registry_for(settings, users={"alice": "s3cret-pw"}) as registry:
            crane = Crane(registry, "alice", "s3cret-pw")

            async def run(*args: str) -> str:
                return await asyncio.to_thread(crane.run, *args)

            ref = crane.ref(REPO, "v1")
            await run("append", "--new_layer", "/dev/null", "-t", crane.ref(REPO, "keep"))
            await run("append", "--new_layer", "/dev/null", "-t", ref)  # created
            await run("mutate", ref, "--label", "build=2", "-t", ref)  # updated: other content
            await run("tag", ref, "v2")  # created: a second tag on an existing digest
            digest = await run("digest", ref)
            await run("delete", crane.ref(REPO, "v2"))  # removed: a tag delete
            await run("delete", f"{registry.host}/{REPO}@{digest}")  # removed: by digest
            remaining = sorted((await run("ls", f"{registry.host}/{REPO}")).split())

            outcomes = await worker.outcomes(6, timeout=60)
    prefix = f"{registry.host}/{REPO}"
    assert changes(outcomes) == {
        f"{prefix}:keep": [("ocitag.updated.v1", "created")],
        f"{prefix}:v1": [
            ("ocitag.updated.v1", "created"),
            ("ocitag.updated.v1", "updated"),
            ("ocitag.removed.v1", "deleted"),
        ],
        f"{prefix}:v2": [("ocitag.updated.v1", "created"), ("ocitag.removed.v1", "deleted")],
    }
    updated = [o.body for o in outcomes if o.body["type"] == "ocitag.updated.v1"]
    assert {b["data"]["last_modified_by"] for b in updated} == {"alice"}  # the real user
    assert remaining == ["keep"]
    conn = await asyncpg.connect(database_url)
    try:
        live = await conn.fetch("SELECT repository, tag FROM live_ocitags ORDER BY tag")
    finally:
        await conn.close()
    assert [(r["repository"], r["tag"]) for r in live] == [(prefix, t) for t in remaining]


async def end_offsets(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.kafka_bootstrap_servers)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            partitions = [TopicPartition(topic, p) for p in range(settings.topics.topic_partitions)]
        ends = await consumer.end_offsets(partitions)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status, json.loads(await r.read())


async def test_a_retried_delivery_is_one_effect_and_a_wrong_secret_nothing(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = ingest_settings(make_settings)
    body, _ = load_delivery("distribution", "push-tag")
    async with running_worker(settings) as worker, running_ingest(settings) as url:
        endpoint = f"{url}/webhooks/distribution"
        status, _ = await post(endpoint, body, {"Authorization": "Bearer wrong"})
        assert status == 401
        assert await end_offsets(settings, settings.topics.input_topic) == 0
        answers = [await post(endpoint, body, {"Authorization": TOKEN}) for _ in range(2)]
        assert [a[0] for a in answers] == [200, 200]
        assert answers[0][1] == answers[1][1]
        outcomes = await worker.outcomes(2)
        inputs = await worker.collect(settings.topics.input_topic, 2)
    assert inputs[0].value == inputs[1].value  # the same event, byte for byte
    assert outcomes[0].value == outcomes[1].value  # the worker's replay: one effect
    assert outcomes[0].body["change"] == "created"
    conn = await asyncpg.connect(database_url)
    try:
        version = await conn.fetchval("SELECT version FROM ocitags")
    finally:
        await conn.close()
    assert version == 1


def stack(command: str) -> None:
    subprocess.run([str(STACK), command], check=True, capture_output=True, timeout=180)


async def test_kafka_stopped_is_503_and_the_registry_retry_delivers(
    make_settings: Callable[..., Settings], registry_tools: Path, services: Services
) -> None:
    if not services.can_restart:
        pytest.skip("stopping Kafka needs the local stack")
    settings = ingest_settings(make_settings, ingest_deadline_seconds=0.8)
    refused = metrics.INGEST_REJECTED.labels("distribution", "kafka_unavailable")
    async with running_worker(settings) as worker, running_ingest(settings):
        with registry_for(settings) as registry:
            crane = Crane(registry)
            await asyncio.to_thread(crane.push, REPO, "before")
            await worker.outcomes(1, timeout=60)
            before = refused._value.get()
            await asyncio.to_thread(stack, "kafka-stop")
            try:
                await asyncio.to_thread(crane.push, REPO, "during")
                await eventually(lambda: refused._value.get() > before, timeout=30)
            finally:
                await asyncio.to_thread(stack, "kafka-start")
            outcomes = await worker.outcomes(2, timeout=120)
            # a send cut off by the deadline may still land: then the worker's replay
            # (byte-identical) is all it adds
            extra = await worker.collect(settings.topics.outcome_topic, len(outcomes), timeout=5)
    during = [o for o in extra if o.body["subject"] == f"{registry.host}/{REPO}:during"]
    assert during, "the delivery refused while Kafka was away never arrived"
    assert during[0].body["type"] == "ocitag.updated.v1"
    assert during[0].body["change"] == "created"
    assert {o.value for o in during} == {during[0].value}


async def test_docker_hub_digest_is_resolved_from_the_registry_or_502(
    make_settings: Callable[..., Settings], registry_tools: Path
) -> None:
    with Registry() as registry:
        crane = Crane(registry)
        digest = await asyncio.to_thread(crane.push, REPO, "v1")
        settings = ingest_settings(
            make_settings,
            ingest_dockerhub_secret="hub-path-secret",
            # the registry stands in for Docker Hub (the setting exists for mirrors)
            registry_endpoints=f"docker.io={registry.url}",
        )

        def hub(tag: str) -> bytes:
            return json.dumps(
                {
                    "push_data": {"pushed_at": 1767225600, "pusher": "bob", "tag": tag},
                    "repository": {"repo_name": REPO, "namespace": "team", "name": "app"},
                }
            ).encode()

        async with running_worker(settings) as worker, running_ingest(settings) as url:
            endpoint = f"{url}/webhooks/dockerhub/hub-path-secret"
            missing, _ = await post(endpoint, hub("not-there"), {})
            assert missing == 502
            assert await end_offsets(settings, settings.topics.input_topic) == 0
            status, body = await post(endpoint, hub("v1"), {})
            assert status == 200, body
            [outcome] = await worker.outcomes(1)
    assert outcome.body["subject"] == f"docker.io/{REPO}:v1"
    assert outcome.body["data"]["artifact"] == digest.removeprefix("sha256:")
    assert outcome.body["data"]["last_modified_by"] == "bob"


async def test_cloudevents_sent_by_the_sdk_keep_their_identity(
    make_settings: Callable[..., Settings],
) -> None:
    from cloudevents.core.bindings import http as ce_http
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    settings = ingest_settings(make_settings, ingest_cloudevents_secret=TOKEN)
    event = CloudEvent(
        attributes={
            "type": "ocitag.moved.v1",
            "source": "https://ci.example.com/pipelines/42",
            "id": "build-42",
            "time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "datacontenttype": "application/json",
        },
        data={"repository": "istio/pilot", "tag": "1.3.0", "artifact": "ab" * 32},
    )
    message = ce_http.to_binary(event, JSONFormat())
    async with running_worker(settings) as worker, running_ingest(settings) as url:
        status, body = await post(
            f"{url}/webhooks/cloudevents", message.body, {**message.headers, "Authorization": TOKEN}
        )
        assert status == 200, body
        [outcome] = await worker.outcomes(1)
    assert outcome.body["causationsource"] == "https://ci.example.com/pipelines/42"
    assert outcome.body["causationid"] == "build-42"
    assert outcome.body["subject"] == "docker.io/istio/pilot:1.3.0"
    assert outcome.body["data"]["last_modified_on"].startswith("2026-01-02T03:04:05")


async def test_oras_artifacts_and_an_index_become_tags(
    make_settings: Callable[..., Settings], registry_tools: Path
) -> None:
    """Pushed with oras (a non-image OCI artifact, then tagged twice at once) and an
    index built by crane: every tagged manifest kind is a tag; untagged pushes (the
    index's member by digest) and blobs are not."""
    settings = ingest_settings(make_settings)
    async with running_worker(settings) as worker, running_ingest(settings):
        with registry_for(settings, users={"alice": "s3cret-pw"}) as registry:
            oras = Oras(registry, "alice", "s3cret-pw")
            crane = Crane(registry, "alice", "s3cret-pw")
            digest = await asyncio.to_thread(
                oras.push, "team/sbom", "v1", "an sbom", "application/vnd.example.sbom"
            )
            await asyncio.to_thread(oras.tag, "team/sbom", "v1", "stable", "latest")
            await asyncio.to_thread(crane.push, REPO, "amd64")
            index = await asyncio.to_thread(crane.index, REPO, "multi", (REPO, "amd64"))
            outcomes = await worker.outcomes(5, timeout=60)
    host = registry.host
    by_subject = {o.body["subject"]: o.body for o in outcomes}
    assert set(by_subject) == {
        f"{host}/team/sbom:v1",
        f"{host}/team/sbom:stable",
        f"{host}/team/sbom:latest",
        f"{host}/{REPO}:amd64",
        f"{host}/{REPO}:multi",
    }
    for tag in ("v1", "stable", "latest"):
        record = by_subject[f"{host}/team/sbom:{tag}"]
        assert (record["change"], record["data"]["artifact"]) == ("created", digest[7:])
        assert record["data"]["last_modified_by"] == "alice"
    assert by_subject[f"{host}/{REPO}:multi"]["data"]["artifact"] == index.removeprefix("sha256:")
