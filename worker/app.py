"""The worker's lifecycle, in order: HTTP probes, database (schema checked), topics,
producer, consumer, loop; and back down in reverse on SIGTERM/SIGINT.

Start-up waits for the database and the broker up to OCITAG_STARTUP_TIMEOUT_SECONDS,
logging each retry; a refusal (bad credentials, missing database, wrong schema) stops
at once. Either way the message names the setting to look at.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer

from worker import metrics, partitions, reachability, runtime
from worker.batches import BatchRunner
from worker.coalesce import CoalescingStore
from worker.consumerstop import stop_consumer
from worker.deadletter import DeadLetters
from worker.health import COMMAND_PARTS, Check, Health
from worker.kafka import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
    NO_BROKER_ANSWERED,
    PUBLISHING_OUTCOMES,
    Producer,
    check_connection,
    client_options,
    ensure_topics,
    max_message_bytes,
    start_whole,
)
from worker.migrate import check_schema
from worker.outcomes import OutcomeContext
from worker.pipeline import Pipeline
from worker.rawrecords import RawFetcher
from worker.settings import COMMAND_SETTINGS, Settings
from worker.startup import KAFKA, Lifecycle, StopRequestedError, create_pool, wait_for_service
from worker.statetopic import ensure_state_topic
from worker.store import Store
from worker.unreadable import Unreadable

log = structlog.get_logger("worker.app")


async def _prune_loop(pool: asyncpg.Pool, store: Store, settings: Settings) -> None:
    """Rotate the idempotency record's partitions and drop the expired ones
    (worker/partitions.py), and delete tombstones past retention in small batches,
    forever."""
    while True:
        await asyncio.sleep(settings.retention.prune_interval_seconds)
        try:
            done = await partitions.maintain(
                pool,
                retention_seconds=settings.retention.processed_retention_seconds,
                partition_seconds=settings.retention.processed_partition_seconds,
                history_retention_seconds=settings.retention.history_retention_seconds,
            )
            metrics.PRUNED.inc(done.dropped_records)
            metrics.HISTORY_PARTITIONS_DROPPED.inc(done.history_dropped_entries)
            tombstones = await store.prune_tombstones(
                settings.retention.tombstone_retention_seconds
            )
            metrics.TOMBSTONES_PRUNED.inc(tombstones)
            if done.rotated_to is not None or done.dropped or done.history_dropped or tombstones:
                log.info(
                    "pruned",
                    rotated_to=done.rotated_to,
                    dropped_partitions=list(done.dropped),
                    processed_events=done.dropped_records,
                    tombstones=tombstones,
                    dropped_history_partitions=list(done.history_dropped),
                    history_entries=done.history_dropped_entries,
                    history_baselines=done.history_baselines,
                )
        except Exception as exc:
            log.warning("prune_failed", error=str(exc))


def _readiness(
    consumer: AIOKafkaConsumer, store: Store, producer: Producer
) -> Callable[[], Awaitable[Check]]:
    cache: dict[str, tuple[float, Check]] = {}

    async def probe() -> Check:
        cached = cache.get("db")
        if cached is None or time.monotonic() - cached[0] > 5:
            try:
                await asyncio.wait_for(store.ping(), timeout=2)
                check = Check(True, "ok")
            except Exception as exc:
                check = Check(False, f"database unreachable: {type(exc).__name__}")
            cache["db"] = (time.monotonic(), check)
        db = cache["db"][1]
        if not db.ok:
            return db
        # asking makes an idle producer try again, after an outage too
        if not await producer.reachable(0.5, unknown=False):
            return Check(False, f"kafka unreachable ({NO_BROKER_ANSWERED})")
        if not consumer.subscription():
            return Check(False, "consumer not subscribed")
        return Check(True, "ready")

    return probe


async def run(
    settings: Settings, stop: asyncio.Event | None = None, *, handle_signals: bool = True
) -> None:
    """Run the worker until SIGTERM/SIGINT (or ``stop``); raises FatalError."""
    health = Health(settings.probes.liveness_timeout_seconds, parts=COMMAND_PARTS["run"])
    async with Lifecycle(stop, handle_signals=handle_signals) as process:
        await process.probes(settings, health, "run")
        try:
            await _run(settings, process, health)
        except StopRequestedError:
            log.info("stopped", during="start-up")


async def _run(settings: Settings, process: Lifecycle, health: Health) -> None:
    log.info("starting", settings=settings.masked(COMMAND_SETTINGS["run"], changed=True))
    stop, timeout = process.stop, settings.lifecycle.startup_timeout_seconds
    async with Lifecycle(stop, handle_signals=False) as opened:  # closed before "stopped"
        pool = await opened.pool(create_pool(settings, "worker", stop, give_up_after=timeout))
        reachability.POSTGRESQL.succeeded()
        async with pool.acquire() as conn:
            version = await check_schema(conn)
        log.info("database_ready", schema_version=version)

        async def kafka(attempt: Callable[[], Awaitable[object]]) -> None:
            await wait_for_service(KAFKA, attempt, stop=stop, give_up_after=timeout)

        topics = [
            settings.topics.input_topic,
            settings.topics.outcome_topic,
            settings.topics.dlq_topic,
        ]
        await kafka(lambda: check_connection(settings))
        await kafka(lambda: ensure_topics(settings, topics))
        await kafka(lambda: ensure_state_topic(settings))
        producer = Producer(settings, component="the worker", action=PUBLISHING_OUTCOMES)
        opened.on_exit(producer.stop)
        await kafka(producer.start)
        reachability.KAFKA.succeeded()
        await _consume(settings, opened, health, pool=pool, producer=producer, kafka=kafka)
    log.info("stopped")


async def _dead_letters(settings: Settings, producer: Producer) -> DeadLetters:
    """Dead letters sized to the dead-letter topic's max.message.bytes, read now (and
    again whenever the broker refuses one as too large)."""

    async def read_limit() -> int | None:
        return await max_message_bytes(settings, settings.topics.dlq_topic)

    limit = await read_limit()
    log.info("dead_letter_limit", topic=settings.topics.dlq_topic, max_message_bytes=limit)
    fallback = min(DEFAULT_MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES)
    return DeadLetters(producer, settings.topics.dlq_topic, limit or fallback, read_limit)


def input_consumer_options(settings: Settings) -> dict[str, Any]:
    """The input consumer's options beyond the connection's (``client_options``): the
    group, offsets committed by the pipeline only, and the fetch and membership settings.
    Pure."""
    consumer = settings.consumer
    return {
        "group_id": settings.kafka.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": consumer.max_batch_records,
        "fetch_max_bytes": consumer.fetch_max_bytes,
        "fetch_min_bytes": consumer.fetch_min_bytes,
        "fetch_max_wait_ms": consumer.fetch_max_wait_ms,
        "max_partition_fetch_bytes": consumer.max_partition_fetch_bytes,
        "session_timeout_ms": consumer.session_timeout_ms,
        "heartbeat_interval_ms": consumer.heartbeat_interval_ms,
        "max_poll_interval_ms": consumer.max_poll_interval_ms,
        "client_id": f"{settings.kafka.group_id}-input",
    }


async def _consume(
    settings: Settings,
    opened: Lifecycle,
    health: Health,
    *,
    pool: asyncpg.Pool,
    producer: Producer,
    kafka: Callable[[Callable[[], Awaitable[object]]], Awaitable[None]],
) -> None:
    consumer = AIOKafkaConsumer(**client_options(settings), **input_consumer_options(settings))
    opened.on_exit(lambda: stop_consumer(consumer, "input"))
    store = Store(
        pool,
        OutcomeContext.of(settings.contract),
        tombstone_retention=timedelta(seconds=settings.retention.tombstone_retention_seconds),
    )
    opened.on_exit(store.close)  # before the pool closes
    applier = CoalescingStore(
        store,
        limit=settings.consumer.apply_transactions,
        max_items=settings.consumer.max_batch_records,
    )
    opened.on_exit(applier.close)  # before the store's and the pool's
    runner = BatchRunner(
        settings, consumer, producer, applier, await _dead_letters(settings, producer)
    )
    raw = RawFetcher(settings, client_options(settings))
    unreadable = Unreadable(
        consumer, raw, settings.topics.input_topic, settings.consumer.max_batch_records
    )
    pipeline = Pipeline(settings, consumer, runner, unreadable, health)

    await kafka(lambda: start_whole(consumer.start, consumer.stop))
    consumer.subscribe([settings.topics.input_topic], listener=pipeline)
    health.readiness_probe = _readiness(consumer, store, producer)
    health.started()
    runtime.watch_gc()
    if settings.process.gc_tuning:
        runtime.tune_gc(runtime.WORKER_YOUNG_THRESHOLD)
    opened.task(_prune_loop(pool, store, settings), name="prune")
    log.info("running", topic=settings.topics.input_topic, group_id=settings.kafka.group_id)
    await pipeline.run(opened.stop)
