"""The naive baseline: one event at a time, strictly sequentially — fetch one record,
decode it, apply it in its own database transaction (``Store.apply([item])``), produce
its outcome and wait for the acknowledgement, commit its offset. The same contract as
the worker (same decoder, store, outcomes, dead letters, acks=all), none of its
batching or concurrency."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.runner import Topics
from worker.consumer import to_raw
from worker.db import open_pool
from worker.decode import decode
from worker.events import Undecodable
from worker.kafka import new_producer
from worker.outcomes import OutcomeContext, undecodable_outcome
from worker.plan import Item
from worker.settings import Settings, load_settings
from worker.store import Store


def settings_for(kafka: str, database_url: str, topics: Topics, group: str) -> Settings:
    return load_settings(
        {
            "kafka_bootstrap_servers": kafka,
            "database_url": database_url,
            "input_topic": topics.input,
            "outcome_topic": topics.outcomes,
            "dlq_topic": topics.dlq,
            "state_topic": topics.state,
            "group_id": group,
        },
        environ={},
    )


async def run_naive(settings: Settings, count: int) -> dict[str, Any]:
    """Process the first ``count`` records of the input topic one by one; events/s from
    the first record fetched to the last offset committed."""
    ctx = OutcomeContext(settings.contract.worker_source, settings.contract.problem_base_uri)
    pool = await open_pool(
        settings.database.dsn(),
        settings.database.db_pool_min_size,
        settings.database.db_pool_max_size,
        settings.database.db_command_timeout_seconds,
        settings.database.db_idle_in_transaction_timeout_seconds,
    )
    store = Store(pool, ctx)
    producer = new_producer(settings)
    consumer = AIOKafkaConsumer(
        settings.topics.input_topic,
        bootstrap_servers=settings.kafka.kafka_bootstrap_servers,
        group_id=settings.kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    statuses: dict[int, int] = {}
    await producer.start()
    await consumer.start()
    try:
        started = 0.0
        for n in range(count):
            record = await consumer.getone()
            if n == 0:
                started = time.perf_counter()
            raw = to_raw(record)
            event = decode(raw, settings.contract.max_event_bytes)
            if isinstance(event, Undecodable):
                outcome = undecodable_outcome(ctx, raw, event)
                await producer.send_and_wait(
                    settings.topics.dlq_topic,
                    raw.value or b"",
                    key=raw.key,
                    headers=list(raw.headers),
                )
            else:
                (outcome,) = await store.apply([Item(raw, event)], datetime.now(UTC))
            await producer.send_and_wait(
                settings.topics.outcome_topic,
                outcome.value,
                key=outcome.key,
                headers=outcome.headers,
            )
            await consumer.commit({TopicPartition(raw.topic, raw.partition): raw.offset + 1})
            statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
        seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
    return {
        "events": count,
        "seconds": round(seconds, 3),
        "events_per_second": round(count / seconds, 1),
        "outcomes_by_status": {str(k): v for k, v in sorted(statuses.items())},
        "complete": sum(statuses.values()) == count,
    }
