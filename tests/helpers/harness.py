"""Running the real worker in-process against the test's topics and database, publishing
records and collecting outcomes through Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.helpers.cloudevents_sdk import sdk_errors
from tests.helpers.contract import errors_of, schema_validator, seed_validator
from worker.app import run
from worker.kafka import ensure_topics
from worker.settings import Settings

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


@dataclass
class Received:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int
    offset: int

    @property
    def body(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.value)
        return parsed


@dataclass
class Harness:
    settings: Settings
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(
        self, records: Sequence[Record], partition: int | None = None
    ) -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka.kafka_bootstrap_servers, acks="all"
        )
        await producer.start()
        try:
            futures = [
                await producer.send(
                    self.settings.topics.input_topic,
                    value,
                    key=key,
                    headers=headers,
                    partition=partition,
                )
                for key, value, headers in records
            ]
            return [((m := await f).partition, m.offset) for f in futures]
        finally:
            await producer.stop()

    async def collect(self, topic: str, count: int, timeout: float = 30.0) -> list[Received]:
        """The first ``count`` records of a topic (from the beginning)."""
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.settings.kafka.kafka_bootstrap_servers,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        found: list[Received] = []
        try:
            async with asyncio.timeout(timeout):
                while len(found) < count:
                    batch = await consumer.getmany(timeout_ms=200)
                    for records in batch.values():
                        found.extend(
                            Received(r.key, r.value, list(r.headers), r.partition, r.offset)
                            for r in records
                        )
        except TimeoutError:
            raise AssertionError(
                f"only {len(found)} of {count} records on {topic} within {timeout} s"
            ) from None
        finally:
            await consumer.stop()
        return found

    async def outcomes(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The first ``count`` outcomes, each checked against the published contract
        (schemas/ and the seed's records) and read by the CloudEvents SDK: every
        end-to-end test checks it."""
        found = await self.collect(self.settings.topics.outcome_topic, count, timeout)
        for outcome in found:
            problems = contract_errors(outcome.body)
            problems += sdk_errors(outcome.key, outcome.value, outcome.headers)
            assert not problems, (outcome.body, problems)
        return found


_OUTCOME_SCHEMAS = {
    "ocitag.updated.v1": ("outcome-updated.schema.json", "OCITag"),
    "ocitag.removed.v1": ("outcome-removed.schema.json", "OCITag"),
}


def contract_errors(body: dict[str, Any]) -> list[str]:
    """Why an outcome breaks schemas/outcome-*.schema.json or the seed's record schemas."""
    envelope_file, record_name = _OUTCOME_SCHEMAS.get(
        str(body.get("type")), ("outcome-rejected.schema.json", "ErrorModel")
    )
    envelope = schema_validator(envelope_file)
    record = seed_validator(record_name)
    return errors_of(envelope, body) + errors_of(record, body.get("data"))


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Harness]:
    """The worker's own run(), in this event loop, stopped (drained) on exit."""
    await ensure_topics(
        settings,
        [settings.topics.input_topic, settings.topics.outcome_topic, settings.topics.dlq_topic],
    )
    harness = Harness(settings)
    harness.task = asyncio.create_task(run(settings, harness.stop, handle_signals=False))
    try:
        yield harness
    finally:
        harness.stop.set()
        await asyncio.wait_for(harness.task, timeout=settings.lifecycle.shutdown_grace_seconds + 15)


def structured(event: dict[str, Any], key: bytes | None = None) -> Record:
    return key, json.dumps(event).encode(), [("content-type", b"application/cloudevents+json")]


def binary(event: dict[str, Any], key: bytes | None = None) -> Record:
    headers = [(f"ce_{k}", str(v).encode()) for k, v in event.items() if k != "data"]
    headers.append(("content-type", b"application/json"))
    return key, json.dumps(event["data"]).encode(), headers


async def committed(settings: Settings, partition: int = 0) -> int | None:
    """The worker group's committed offset of an input partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.kafka_bootstrap_servers, group_id=settings.kafka.group_id
    )
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(
            TopicPartition(settings.topics.input_topic, partition)
        )
        return offset
    finally:
        await consumer.stop()


async def records_on(settings: Settings, topic: str) -> int:
    """How many records a topic holds now (the sum of its partitions' end offsets): a
    request refused before publishing leaves it unchanged."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assert partitions, f"no partitions of {topic}"
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()
