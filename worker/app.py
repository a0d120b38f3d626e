"""The worker's lifecycle, in order: HTTP probes, database (schema checked), topics,
producer, consumer, loop; and back down in reverse on SIGTERM/SIGINT.

Start-up waits for the database and the broker up to OCITAG_STARTUP_TIMEOUT_SECONDS,
logging each retry; a refusal (bad credentials, missing database, wrong schema) stops
at once. Either way the message names the setting to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer

from worker import metrics, partitions, reachability, runtime
from worker.batches import BatchRunner
from worker.db import classify_db_error, open_pool
from worker.deadletter import DeadLetters
from worker.errors import FatalError, TransientError, describe
from worker.health import COMMAND_PARTS, Check, Health
from worker.http import serve
from worker.kafka import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
    Producer,
    check_connection,
    classify_kafka_error,
    client_options,
    ensure_topics,
    max_message_bytes,
)
from worker.migrate import check_schema
from worker.outcomes import OutcomeContext
from worker.pipeline import Pipeline
from worker.rawrecords import RawFetcher
from worker.retry import Backoff, retrying
from worker.settings import COMMAND_SETTINGS, Settings
from worker.shutdown import install_signals
from worker.store import Store
from worker.unreadable import Unreadable

log = structlog.get_logger("worker.app")
T = TypeVar("T")


class StopRequestedError(Exception):
    """SIGTERM/SIGINT arrived while start-up was waiting for a service."""


def _connecting_to_kafka(exc: BaseException) -> Exception:
    return classify_kafka_error(exc, "connecting")


async def wait_for_service(
    what: str,
    setting: str,
    attempt: Callable[[], Awaitable[T]],
    settings: Settings,
    *,
    classify: Callable[[BaseException], Exception] = _connecting_to_kafka,
    stop: asyncio.Event | None = None,
) -> T:
    """Retry ``attempt`` while it fails transiently, up to the start-up timeout; give
    up at once when ``stop`` is set."""
    deadline = time.monotonic() + settings.lifecycle.startup_timeout_seconds
    stop = stop or asyncio.Event()

    def checked(exc: BaseException) -> BaseException:
        if isinstance(exc, FatalError):
            return exc
        error = classify(exc)
        if isinstance(error, FatalError):  # the classifier's words name the cause and fix
            return error
        if not isinstance(error, TransientError):
            return FatalError(f"{what} ({setting}) refused: {exc}")
        if time.monotonic() >= deadline:
            return FatalError(
                f"{what} at {setting} did not answer within "
                f"{settings.lifecycle.startup_timeout_seconds:g} s "
                f"(OCITAG_STARTUP_TIMEOUT_SECONDS): {describe(exc)}"
            )
        return error

    def report(error: TransientError, attempt: int, delay: float) -> None:
        log.warning(
            "waiting_for_service",
            service=what,
            setting=setting,
            cause=error.cause,
            error=str(error),
            attempt=attempt,
            retry_in_seconds=round(delay, 2),
        )

    async def pause(delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            raise StopRequestedError

    if stop.is_set():
        raise StopRequestedError
    return await retrying(
        attempt, Backoff(0.25, 5.0), classify=checked, wait=pause, on_retry=report
    )


async def create_pool(
    settings: Settings, component: str, stop: asyncio.Event | None = None
) -> asyncpg.Pool:
    """The pool, once PostgreSQL answers; a refusal stops ``component`` (named in it)."""

    async def connect() -> asyncpg.Pool:
        return await open_pool(
            settings.database.dsn(),
            settings.database.db_pool_min_size,
            settings.database.db_pool_max_size,
            settings.database.db_command_timeout_seconds,
            settings.database.db_idle_in_transaction_timeout_seconds,
        )

    def classify(exc: BaseException) -> Exception:
        return classify_db_error(exc, component)

    return await wait_for_service(
        "PostgreSQL", "DATABASE_URL", connect, settings, classify=classify, stop=stop
    )


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
            )
            metrics.PRUNED.inc(done.dropped_records)
            tombstones = await store.prune_tombstones(
                settings.retention.tombstone_retention_seconds
            )
            metrics.TOMBSTONES_PRUNED.inc(tombstones)
            if done.rotated_to is not None or done.dropped or tombstones:
                log.info(
                    "pruned",
                    rotated_to=done.rotated_to,
                    dropped_partitions=list(done.dropped),
                    processed_events=done.dropped_records,
                    tombstones=tombstones,
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
        if not await producer.reachable(0):  # asking makes an idle producer try again
            return Check(False, "kafka unreachable (no broker answered the producer's last try)")
        if not consumer.subscription():
            return Check(False, "consumer not subscribed")
        return Check(True, "ready")

    return probe


async def run(
    settings: Settings, stop: asyncio.Event | None = None, *, handle_signals: bool = True
) -> None:
    """Run the worker until SIGTERM/SIGINT (or ``stop``); raises FatalError."""
    stop = stop or asyncio.Event()
    if handle_signals:
        install_signals(stop)
    health = Health(settings.probes.liveness_timeout_seconds, parts=COMMAND_PARTS["run"])
    http = (
        await serve(health, settings.probes.http_host, settings.probes.http_port, "run")
        if settings.probes.http_port
        else None
    )
    try:
        await _run(settings, stop, health)
    except StopRequestedError:
        log.info("stopped", during="start-up")
    finally:
        if http is not None:
            await http.cleanup()


async def _run(settings: Settings, stop: asyncio.Event, health: Health) -> None:
    log.info("starting", settings=settings.masked(COMMAND_SETTINGS["run"]))
    pool = await create_pool(settings, "worker", stop)
    reachability.POSTGRESQL.succeeded()
    try:
        async with pool.acquire() as conn:
            version = await check_schema(conn)
        log.info("database_ready", schema_version=version)

        async def kafka(attempt: Callable[[], Awaitable[object]]) -> None:
            await wait_for_service("Kafka", "KAFKA_BOOTSTRAP_SERVERS", attempt, settings, stop=stop)

        topics = [
            settings.topics.input_topic,
            settings.topics.outcome_topic,
            settings.topics.dlq_topic,
        ]
        await kafka(lambda: check_connection(settings))
        await kafka(lambda: ensure_topics(settings, topics))
        producer = Producer(settings)
        try:
            await kafka(producer.start)
            reachability.KAFKA.succeeded()
            await _consume(settings, stop, health, pool=pool, producer=producer, kafka=kafka)
        finally:
            await producer.stop()
    finally:
        await pool.close()
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


async def _consume(
    settings: Settings,
    stop: asyncio.Event,
    health: Health,
    *,
    pool: asyncpg.Pool,
    producer: Producer,
    kafka: Callable[[Callable[[], Awaitable[object]]], Awaitable[None]],
) -> None:
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=settings.kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=settings.consumer.max_batch_records,
        fetch_max_bytes=settings.consumer.fetch_max_bytes,
        fetch_max_wait_ms=settings.consumer.fetch_max_wait_ms,
        max_partition_fetch_bytes=settings.consumer.max_partition_fetch_bytes,
        session_timeout_ms=settings.consumer.session_timeout_ms,
        heartbeat_interval_ms=settings.consumer.heartbeat_interval_ms,
        max_poll_interval_ms=settings.consumer.max_poll_interval_ms,
        client_id=f"{settings.kafka.group_id}-input",
    )
    store = Store(
        pool, OutcomeContext(settings.contract.worker_source, settings.contract.problem_base_uri)
    )
    runner = BatchRunner(
        settings, consumer, producer, store, await _dead_letters(settings, producer)
    )
    raw = RawFetcher(settings, client_options(settings))
    unreadable = Unreadable(
        consumer, raw, settings.topics.input_topic, settings.consumer.max_batch_records
    )
    pipeline = Pipeline(settings, consumer, runner, unreadable, health)

    try:
        await kafka(consumer.start)
    except BaseException:
        await consumer.stop()
        raise
    consumer.subscribe([settings.topics.input_topic], listener=pipeline)
    health.readiness_probe = _readiness(consumer, store, producer)
    health.started()
    runtime.watch_gc()
    if settings.process.gc_tuning:
        runtime.tune_gc()
    pruner = asyncio.create_task(_prune_loop(pool, store, settings), name="prune")
    log.info("running", topic=settings.topics.input_topic, group_id=settings.kafka.group_id)
    try:
        await pipeline.run(stop)
    finally:
        pruner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruner
        await store.close()
        await consumer.stop()
