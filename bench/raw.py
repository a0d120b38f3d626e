"""The raw limits the worker cannot beat on these services:

(a) Kafka alone: consume and republish with no database — ``getmany`` (500 records), send
    every record to another topic, wait for all acknowledgements (acks=all), commit the
    batch; sequentially, batch after batch.
(b) PostgreSQL alone: ``Store.apply`` on batches of 500 of the same events, straight to
    the database (decoded beforehand, not timed): one batch at a time, and one batch per
    partition in flight with all partitions at once (the worker's shape).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench.stream import Record
from worker.db import open_pool
from worker.decode import decode
from worker.events import RawRecord, Undecodable
from worker.kafka import new_producer
from worker.outcomes import OutcomeContext
from worker.plan import Item
from worker.settings import Settings
from worker.store import Store


async def kafka_passthrough(settings: Settings, count: int, batch: int = 500) -> dict[str, Any]:
    """(a): events/s from the first non-empty fetch to the commit of the ``count``-th."""
    producer = new_producer(settings)
    consumer = AIOKafkaConsumer(
        settings.topics.input_topic,
        bootstrap_servers=settings.kafka.kafka_bootstrap_servers,
        group_id=settings.kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=batch,
        fetch_max_bytes=settings.consumer.fetch_max_bytes,
        max_partition_fetch_bytes=settings.consumer.max_partition_fetch_bytes,
    )
    await producer.start()
    await consumer.start()
    done = 0
    started: float | None = None
    try:
        while done < count:
            fetched = await consumer.getmany(timeout_ms=200, max_records=batch)
            if not fetched:
                continue
            if started is None:
                started = time.perf_counter()
            futures = [
                await producer.send(
                    settings.topics.outcome_topic, r.value, key=r.key, headers=list(r.headers)
                )
                for records in fetched.values()
                for r in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in fetched.items()})
            done += sum(len(records) for records in fetched.values())
        assert started is not None
        seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()
    return {
        "events": done,
        "seconds": round(seconds, 3),
        "events_per_second": round(done / seconds, 1),
        "complete": done >= count,
    }


def decoded_batches(
    records: Sequence[Record], placed: Sequence[tuple[int, int]], topic: str, batch: int
) -> dict[int, list[list[Item]]]:
    """Per partition, the records as the worker would see them, in batches of ``batch``
    (undecodable ones never reach the store, as in the worker)."""
    per_partition: dict[int, list[Item]] = defaultdict(list)
    for record, (partition, offset) in zip(records, placed, strict=True):
        raw = RawRecord(
            topic, partition, offset, 0, record.key, record.value, tuple(record.headers)
        )
        event = decode(raw, 65_536)
        if not isinstance(event, Undecodable):
            per_partition[partition].append(Item(raw, event))
    return {
        p: [items[i : i + batch] for i in range(0, len(items), batch)]
        for p, items in sorted(per_partition.items())
    }


async def store_batched(
    settings: Settings, batches: dict[int, list[list[Item]]], events: int, concurrent: bool
) -> dict[str, Any]:
    """(b): events/s of ``Store.apply`` over all the batches; ``events`` counts every
    input record of the slice (undecodable ones included, as for the worker)."""
    ctx = OutcomeContext(settings.contract.worker_source, settings.contract.problem_base_uri)
    pool = await open_pool(
        settings.database.dsn(),
        settings.database.db_pool_min_size,
        settings.database.db_pool_max_size,
        settings.database.db_command_timeout_seconds,
        settings.database.db_idle_in_transaction_timeout_seconds,
    )
    store = Store(pool, ctx)
    statuses: dict[int, int] = defaultdict(int)

    async def apply_all(partition_batches: list[list[Item]]) -> None:
        for items in partition_batches:
            for outcome in await store.apply(items, datetime.now(UTC)):
                statuses[outcome.status] += 1

    try:
        started = time.perf_counter()
        if concurrent:
            await asyncio.gather(*(apply_all(b) for b in batches.values()))
        else:
            # one batch at a time, partitions taken in turn
            rounds = max((len(b) for b in batches.values()), default=0)
            ordered = [b[i] for i in range(rounds) for b in batches.values() if i < len(b)]
            await apply_all(ordered)
        seconds = time.perf_counter() - started
    finally:
        await pool.close()
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_second": round(events / seconds, 1),
        "batches": sum(len(b) for b in batches.values()),
        "outcomes_by_status": {str(k): v for k, v in sorted(statuses.items())},
    }
