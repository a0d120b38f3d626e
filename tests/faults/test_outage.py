"""A Kafka outage of about 20 s under every long-running command at once (worker,
ingest, api, ``outcomes``, as processes): each logs it as one state change, not the
client's every retry; ingest's /readyz says Kafka is unreachable, then connected again;
an api write meanwhile is refused at once, saying the event was not published."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.helpers.outage import API_TIMEOUT_SECONDS, Outage, kafka_outage
from tests.helpers.services import Services, with_database

pytestmark = [pytest.mark.integration, pytest.mark.faults]

OUTAGE_SECONDS = 20.0
ARTIFACT = "a" * 64


@pytest.fixture(scope="module")
async def outage(
    local_stack: Services, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Outage]:
    name = f"ocitag_outage_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(with_database(local_stack.database_url, "postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await admin.close()
    prefix = f"outage{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCITAG_", "KAFKA_", "DATA"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=local_stack.kafka_bootstrap,
        DATABASE_URL=with_database(local_stack.database_url, name),
        OCITAG_INPUT_TOPIC=f"{prefix}.events",
        OCITAG_OUTCOME_TOPIC=f"{prefix}.outcomes",
        OCITAG_DLQ_TOPIC=f"{prefix}.events.dlq",
        OCITAG_STATE_TOPIC=f"{prefix}.state",
        OCITAG_GROUP_ID=f"{prefix}-group",
        OCITAG_TOPIC_PARTITIONS="2",
        OCITAG_TOPIC_REPLICATION_FACTOR="1",
        OCITAG_HTTP_PORT="0",
    )
    tmp = tmp_path_factory.mktemp("outage")
    yield await kafka_outage(env, Path(tmp), seconds=OUTAGE_SECONDS, artifact=ARTIFACT)
    admin = await asyncpg.connect(with_database(local_stack.database_url, "postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.mark.parametrize("command", ["worker", "ingest", "api", "outcomes"])
def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    outage: Outage, command: str
) -> None:
    process = outage.commands[command]
    lines = process.lines()
    # before: ~70 client lines a second per process (`Unable connect to node…`); what
    # stays is the consumer group's own account (coordinator dead, session expired)
    client = [x for x in lines if str(x.get("logger", "")).startswith("aiokafka")]
    assert len(client) <= 6, client
    # the outage and the 5 s after it, and never the process's own shutdown: once the
    # fixture is done it stops every command, and an api back within a second or two
    # logged its shutdown lines inside the window (a flaky count)
    during = process.between(outage.stopped_at, min(outage.started_at + 5, outage.signalled_at))
    assert len(during) <= 8, [x.get("event") for x in during]
    kafka = [x for x in lines if x.get("dependency") == "kafka"]
    events = [x["event"] for x in kafka]
    assert events[0] == "outage_started", events
    assert events[-1] == "outage_ended", events
    assert events.count("outage_started") == 1, events
    # at most one `ongoing` line per 30 s
    assert events.count("outage_ongoing") <= 1, events
    assert kafka[0]["level"] == "warning"
    assert kafka[-1]["seconds"] >= OUTAGE_SECONDS * 0.5
    assert "KafkaConnectionError: KafkaConnectionError" not in process.log.read_text()


def test_ingest_readiness_says_kafka_is_unreachable_and_then_connected(outage: Outage) -> None:
    assert "kafka connected" not in outage.ingest_reasons["during"]
    assert "unreachable" in outage.ingest_reasons["during"]
    assert "kafka connected" in outage.ingest_reasons["after"]


def test_the_api_stays_ready_and_says_what_writes_meet(outage: Outage) -> None:
    """Ready (its reads still answer), with a reason that tells the operator why its
    writes answer 503."""
    assert outage.api_reasons["during"].startswith("ready; ")
    assert "kafka unreachable" in outage.api_reasons["during"]


def test_an_api_write_during_the_outage_is_refused_at_once(outage: Outage) -> None:
    assert outage.api["before"].status == 200
    during = outage.api["during"]
    assert during.status == 503
    # before: the whole OCITAG_API_TIMEOUT_SECONDS
    assert during.seconds < API_TIMEOUT_SECONDS / 4, during.seconds
    assert "Retry-After" in during.headers
    assert "not published" in during.body["detail"]
    assert outage.api["after"].status == 200
