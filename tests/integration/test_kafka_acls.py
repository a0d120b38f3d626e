"""The topic is the last door: deploy/kafka/acls on a real single-node KRaft broker with
StandardAuthorizer and one SASL/SCRAM user per component (the local stack's). Each
component can do exactly what the ACLs say and nothing else: a subscriber's credentials
are refused (TopicAuthorizationFailed) producing to the input topic; ingest, the api and
reconcile write only the input topic; the worker reads it in its group and writes the
outcome, dead-letter and state topics; the api and subscribers read outcomes."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)

from tests.helpers.clients import ClientUnavailableError, kafka_libs
from tests.helpers.services import Services, skip_or_fail

pytestmark = pytest.mark.integration

ACLS = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "acls"
#: an idempotent producer of a principal that may write no topic at all is refused its
#: producer id (IdempotentWrite is implied by WRITE on some topic) before any topic
DENIED = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
)


class Door:
    """Kafka as one component's SCRAM user sees it (``ocitag-<component>``)."""

    def __init__(self, services: Services, component: str) -> None:
        assert services.sasl_bootstrap is not None
        self.options = {
            "bootstrap_servers": services.sasl_bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": f"ocitag-{component}",
            "sasl_plain_password": f"ocitag-{component}-secret",
        }

    async def produces(self, topic: str) -> bool:
        """Whether an idempotent, acks=all send (the components' producer) is accepted."""
        producer = AIOKafkaProducer(
            **self.options, acks="all", enable_idempotence=True, request_timeout_ms=10_000
        )
        try:
            await producer.start()
            await asyncio.wait_for(producer.send_and_wait(topic, b"probe", key=b"k"), 15)
        except DENIED:
            return False
        finally:
            await producer.stop()
        return True

    async def reads(self, topic: str, group: str | None = None) -> bool:
        """Whether it reads the topic's first record (in ``group``, or assigned)."""
        consumer = AIOKafkaConsumer(
            **self.options,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6_000,
            heartbeat_interval_ms=1_000,
        )
        await consumer.start()
        try:
            if topic not in await consumer.topics():  # no DESCRIBE: not even its metadata
                return False
            if group is None:
                consumer.assign([TopicPartition(topic, 0)])
            else:
                consumer.subscribe([topic])
            async with asyncio.timeout(15):
                while True:
                    batch = await consumer.getmany(timeout_ms=500)
                    if any(batch.values()):
                        return True
        except DENIED:
            return False
        finally:
            await consumer.stop()


def _acl_command(libs: Path) -> str:
    """kafka-acls as the distribution's script runs it, from the stack's jars."""
    jvm = "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"
    return f"java {jvm} -cp {libs}/* org.apache.kafka.tools.AclCommand"


async def _forge(options: dict[str, str], topic: str) -> None:
    """A plain (not idempotent) producer's send: refused per topic."""
    producer = AIOKafkaProducer(**options, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"forged")
    finally:
        await producer.stop()


async def _admin_topics(services: Services, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1) for name in names])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for name in names:  # one record each: a reader has something to read
            await producer.send_and_wait(name, b"seed")
    finally:
        await producer.stop()


async def test_the_shipped_acls_are_the_last_door(services: Services, topic_prefix: str) -> None:
    if services.sasl_bootstrap is None:
        skip_or_fail("no SASL listener with the component users: run deploy/local/stack up")
    try:
        libs = kafka_libs()
    except ClientUnavailableError as exc:
        skip_or_fail(str(exc))
    topics = {
        "OCITAG_INPUT_TOPIC": f"{topic_prefix}.events",
        "OCITAG_OUTCOME_TOPIC": f"{topic_prefix}.outcomes",
        "OCITAG_DLQ_TOPIC": f"{topic_prefix}.events.dlq",
        "OCITAG_STATE_TOPIC": f"{topic_prefix}.state",
    }
    group, subscribers = f"{topic_prefix}-worker", f"{topic_prefix}-subscriber"
    await _admin_topics(services, list(topics.values()))
    environ = {
        **os.environ,
        **topics,
        "OCITAG_GROUP_ID": group,
        "OCITAG_SUBSCRIBER_GROUP_PREFIX": subscribers,
        "KAFKA_ACLS": _acl_command(libs),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [str(ACLS), "--bootstrap-server", services.kafka_bootstrap],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if "SecurityDisabled" in done.stderr + done.stdout:
        skip_or_fail("the broker runs without an authorizer: deploy/local/stack down, then up")
    assert done.returncode == 0, done.stderr[-2000:]

    events, outcomes = topics["OCITAG_INPUT_TOPIC"], topics["OCITAG_OUTCOME_TOPIC"]
    dlq, state = topics["OCITAG_DLQ_TOPIC"], topics["OCITAG_STATE_TOPIC"]
    door = {c: Door(services, c) for c in ("ingest", "api", "reconcile", "worker", "subscriber")}

    # the one the issue names: a subscriber's credentials cannot make events
    with pytest.raises(TopicAuthorizationFailedError):
        await _forge(door["subscriber"].options, events)

    writes = {
        (c, t): await door[c].produces(t) for c in door for t in (events, outcomes, dlq, state)
    }
    may_write = {(c, events) for c in ("ingest", "api", "reconcile")} | {
        ("worker", t) for t in (outcomes, dlq, state)
    }
    assert {k for k, ok in writes.items() if ok} == may_write, writes

    reads = {
        "worker reads events in its group": await door["worker"].reads(events, group),
        "subscriber reads outcomes in its groups": await door["subscriber"].reads(
            outcomes, f"{subscribers}-a"
        ),
        "subscriber reads state in its groups": await door["subscriber"].reads(
            state, f"{subscribers}-b"
        ),
        "api reads outcomes (no group)": await door["api"].reads(outcomes),
    }
    assert all(reads.values()), reads
    refused = {
        "subscriber reads events": await door["subscriber"].reads(events),
        "subscriber reads in another group": await door["subscriber"].reads(outcomes, "other"),
        "ingest reads events": await door["ingest"].reads(events),
        "api reads events": await door["api"].reads(events),
        "worker reads events in another group": await door["worker"].reads(events, "other"),
        "reconcile reads outcomes": await door["reconcile"].reads(outcomes),
    }
    assert not any(refused.values()), refused


def test_the_acls_script_refuses_to_guess() -> None:
    done = subprocess.run([str(ACLS)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "--bootstrap-server is required" in done.stderr
