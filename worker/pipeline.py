"""The consume → apply → publish → commit loop.

Rules (aiokafka's consumer rules; SPEC.md "Delivery"):
- partitions are worked concurrently, each strictly in order: a partition is paused
  while a batch of it is in flight, so the next fetch of it starts after that batch;
- a batch's offset (last + 1) is committed only after its database transaction has
  committed and Kafka acknowledged every outcome (acks=all);
- the poll loop never waits on work: it keeps calling ``getmany`` (heartbeats, group
  membership, ``max_poll_interval_ms``) while batches run, and pauses everything when
  the cap on records in flight is reached;
- on revocation, in-flight batches of the revoked partitions are finished and
  committed (or given up, to be redelivered) before the partitions go;
- a transient fault retries the same batch with capped exponential backoff and jitter,
  partition paused, membership kept; a permanent one rejects that one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from worker import metrics
from worker.decode import decode
from worker.errors import FatalError, PermanentError, TransientError
from worker.events import Invalid, RawRecord, TagMoved, Undecodable
from worker.health import Health
from worker.kafka import Message, Producer, classify_kafka_error
from worker.outcomes import Outcome, OutcomeContext, record_outcome_id, rejection
from worker.plan import Item, internal_outcome
from worker.settings import Settings
from worker.store import EventStore

log = structlog.get_logger("worker.pipeline")
T = TypeVar("T")


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, initial: float, cap: float) -> None:
        self._initial = initial
        self._cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self._cap, self._initial * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto


@dataclass
class _Batch:
    tp: TopicPartition
    records: list[RawRecord]
    fetched_at: float
    task: asyncio.Task[None] | None = None
    give_up: asyncio.Event = field(default_factory=asyncio.Event)
    retrying: bool = False


class _GiveUpError(Exception):
    """The batch's partition was revoked or the worker is stopping: leave it
    uncommitted, it will be redelivered."""


def to_raw(record: Any) -> RawRecord:
    return RawRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers or ()),
    )


class Pipeline(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        producer: Producer,
        store: EventStore,
        health: Health,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._store = store
        self._health = health
        self._ctx = OutcomeContext(settings.worker_source, settings.problem_base_uri)
        self._batches: dict[TopicPartition, _Batch] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._fatal: BaseException | None = None
        self._stopping = False
        self._fetch_backoff = Backoff(
            settings.retry_backoff_initial_seconds, settings.retry_backoff_max_seconds
        )

    # ---- the poll loop

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set (or a fatal error), then drain and commit."""
        try:
            while not stop.is_set() and self._fatal is None:
                self._health.loop_beat()
                self._flow_control()
                fetched = await self._fetch()
                now = time.monotonic()
                for tp, records in fetched.items():
                    if records:
                        self._start(tp, [to_raw(r) for r in records], now)
                self._update_gauges()
        finally:
            await self.drain(self._settings.shutdown_grace_seconds)
        if self._fatal is not None:
            raise self._fatal

    async def _fetch(self) -> dict[TopicPartition, list[Any]]:
        """One poll. A broker that is away makes it fail: wait a little and poll again
        (the consumer reconnects by itself); anything else is a fatal error."""
        try:
            fetched: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
                timeout_ms=self._settings.poll_timeout_ms,
                max_records=self._settings.max_batch_records,
            )
            self._fetch_backoff.attempt = 0
            return fetched
        except KafkaError as exc:
            error = classify_kafka_error(exc, "fetching")
            if not isinstance(error, TransientError):
                raise error from exc
            metrics.KAFKA_RETRIES.labels(cause=error.cause).inc()
            log.warning("fetch_failed", error=str(exc), attempt=self._fetch_backoff.attempt)
            await asyncio.sleep(self._fetch_backoff.next_delay())
            return {}

    def _flow_control(self) -> None:
        """Pause partitions with a batch in flight; pause all while the cap is reached."""
        assigned = self._consumer.assignment()
        in_flight = sum(len(b.records) for b in self._batches.values())
        full = in_flight >= self._settings.max_in_flight_records
        to_pause = [tp for tp in assigned if full or tp in self._batches]
        to_resume = [tp for tp in assigned if not full and tp not in self._batches]
        if to_pause:
            self._consumer.pause(*to_pause)
        if to_resume:
            self._consumer.resume(*to_resume)

    def _start(self, tp: TopicPartition, records: list[RawRecord], now: float) -> None:
        self._consumer.pause(tp)
        batch = _Batch(tp, records, now)
        batch.task = asyncio.create_task(self._run_batch(batch), name=f"batch-{tp}")
        self._batches[tp] = batch
        metrics.EVENTS_CONSUMED.inc(len(records))

    async def _run_batch(self, batch: _Batch) -> None:
        try:
            await self._process(batch)
        except _GiveUpError:
            log.info("batch_abandoned", partition=batch.tp.partition, records=len(batch.records))
        except asyncio.CancelledError:
            log.info("batch_cancelled", partition=batch.tp.partition, records=len(batch.records))
            raise
        except FatalError as exc:
            self._fatal = exc
        except Exception as exc:  # a bug: stop rather than commit past unprocessed records
            log.exception("batch_failed", partition=batch.tp.partition)
            self._fatal = exc
        finally:
            self._batches.pop(batch.tp, None)
            if batch.tp in self._consumer.assignment() and not self._stopping:
                self._consumer.resume(batch.tp)

    # ---- one batch of one partition

    async def _process(self, batch: _Batch) -> None:
        started = time.monotonic()
        decoded = [decode(r, self._settings.max_event_bytes) for r in batch.records]
        outcomes = await self._retrying(batch, lambda: self._apply_and_publish(batch, decoded))
        next_offset = batch.records[-1].offset + 1
        await self._retrying(batch, lambda: self._commit(batch.tp, next_offset))
        done = time.monotonic()
        metrics.BATCH_SECONDS.observe(done - started)
        metrics.BATCH_EVENTS.observe(len(batch.records))
        for raw, event, outcome in zip(batch.records, decoded, outcomes, strict=True):
            metrics.EVENT_SECONDS.observe(done - batch.fetched_at)
            metrics.OUTCOMES.labels(
                status=str(outcome.status),
                change=outcome.change or "none",
                replay="true" if outcome.replay else "false",
            ).inc()
            _log_event(raw, event, outcome, done - batch.fetched_at)
        self._health.progress()

    async def _apply_and_publish(
        self, batch: _Batch, decoded: Sequence[TagMoved | Invalid | Undecodable]
    ) -> list[Outcome]:
        processed_at = datetime.now(UTC)
        items = [
            Item(raw, event)
            for raw, event in zip(batch.records, decoded, strict=True)
            if not isinstance(event, Undecodable)
        ]
        applied = iter(await self._apply(items, processed_at))
        messages: list[Message] = []
        outcomes: list[Outcome] = []
        for raw, event in zip(batch.records, decoded, strict=True):
            if isinstance(event, Undecodable):
                outcome = self._undecodable(raw, event)
                messages.append(self._dead_letter(raw, event))
            else:
                outcome = next(applied)
            outcomes.append(outcome)
            messages.append(
                (self._settings.outcome_topic, outcome.key, outcome.value, outcome.headers)
            )
        await self._producer.send_all(messages)
        metrics.DEAD_LETTERED.inc(sum(isinstance(e, Undecodable) for e in decoded))
        return outcomes

    async def _apply(self, items: Sequence[Item], processed_at: datetime) -> list[Outcome]:
        try:
            return await self._store.apply(items, processed_at)
        except PermanentError as exc:
            log.warning("batch_refused", error=str(exc)[:300], records=len(items))
        # An event of the batch is refused by the database: find it by applying one at
        # a time, reject it alone (500), and move on with the others.
        outcomes = []
        for item in items:
            try:
                outcomes.extend(await self._store.apply([item], processed_at))
            except PermanentError as exc:
                log.error("event_refused", error=str(exc), offset=item.record.offset)
                at = datetime.fromtimestamp(item.record.timestamp_ms / 1000, UTC)
                outcomes.append(internal_outcome(self._ctx, item, str(exc)[:200], at))
        return outcomes

    def _undecodable(self, raw: RawRecord, event: Undecodable) -> Outcome:
        return rejection(
            self._ctx,
            problem=event.problem,
            instance=raw.instance,
            subject=None,
            outcome_uuid=record_outcome_id(raw),
            # a replay must be byte-identical and nothing is stored: use the record's time
            processed_at=datetime.fromtimestamp(raw.timestamp_ms / 1000, UTC),
            source=event.source,
            event_id=event.id,
        )

    def _dead_letter(self, raw: RawRecord, event: Undecodable) -> Message:
        headers = [
            *raw.headers,
            ("ocitag_dlq_topic", raw.topic.encode()),
            ("ocitag_dlq_partition", str(raw.partition).encode()),
            ("ocitag_dlq_offset", str(raw.offset).encode()),
            ("ocitag_dlq_status", str(event.problem.status).encode()),
            ("ocitag_dlq_reason", _truncate_utf8(event.problem.detail, 1000)),
        ]
        return (self._settings.dlq_topic, raw.key, raw.value or b"", headers)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({tp: offset})
        except (CommitFailedError, IllegalStateError) as exc:
            # the partition went to another member: it redoes the batch, with the same
            # outcomes (they are stored), so there is nothing to repair here
            log.warning("commit_lost", partition=tp.partition, offset=offset, error=str(exc))
            return
        except KafkaError as exc:
            raise classify_kafka_error(exc, "committing offsets") from exc
        self._committed[tp] = offset
        metrics.LAST_COMMIT.set(time.time())

    async def _retrying(self, batch: _Batch, work: Callable[[], Awaitable[T]]) -> T:
        backoff = Backoff(
            self._settings.retry_backoff_initial_seconds, self._settings.retry_backoff_max_seconds
        )
        while True:
            if batch.give_up.is_set():
                raise _GiveUpError
            try:
                return await work()
            except TransientError as exc:
                counter = (
                    metrics.DB_RETRIES if exc.cause.startswith("db") else metrics.KAFKA_RETRIES
                )
                counter.labels(cause=exc.cause).inc()
                delay = backoff.next_delay()
                log.warning(
                    "retrying",
                    cause=exc.cause,
                    error=str(exc)[:300],
                    attempt=backoff.attempt,
                    delay_seconds=round(delay, 3),
                    partition=batch.tp.partition,
                )
                self._health.retrying()
                batch.retrying = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(batch.give_up.wait(), timeout=delay)

    # ---- rebalances and shutdown

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Finish (and commit) the revoked partitions' batches before they go; a batch
        stuck retrying is given up and will be redelivered to the next owner."""
        batches = [self._batches[tp] for tp in revoked if tp in self._batches]
        await self._finish(batches, self._settings.shutdown_grace_seconds)
        for tp in revoked:
            if self._committed.pop(tp, None) is not None:
                metrics.CONSUMER_LAG.remove(str(tp.partition))
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        metrics.ASSIGNED_PARTITIONS.set(len(self._consumer.assignment()))
        for tp in assigned:  # the lag gauge needs a committed offset from the start
            with contextlib.suppress(KafkaError):
                committed = await self._consumer.committed(tp)
                if committed is not None:
                    self._committed[tp] = committed
        self._health.assigned()
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    async def drain(self, grace: float) -> None:
        """Let in-flight batches finish within the grace period; give up the rest."""
        self._stopping = True
        await self._finish(list(self._batches.values()), grace)

    async def _finish(self, batches: list[_Batch], grace: float) -> None:
        tasks = [b.task for b in batches if b.task is not None]
        if not tasks:
            return
        for batch in batches:
            if batch.retrying:  # waiting for a service: it would not finish in time
                batch.give_up.set()
        done, pending = await asyncio.wait(tasks, timeout=grace)
        for batch in batches:
            batch.give_up.set()
        if pending:
            _, still = await asyncio.wait(pending, timeout=min(5.0, grace))
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        log.info("drained", finished=len(done), given_up=len(pending))

    # ---- gauges

    def _update_gauges(self) -> None:
        records = [r for b in self._batches.values() for r in b.records]
        metrics.IN_FLIGHT.set(len(records))
        oldest = min((r.timestamp_ms for r in records), default=None)
        metrics.OLDEST_UNPROCESSED_AGE.set(
            0 if oldest is None else max(0.0, time.time() - oldest / 1000)
        )
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            committed = self._committed.get(tp)
            if end is not None and committed is not None:
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, end - committed))


def _truncate_utf8(text: str, limit: int) -> bytes:
    """At most ``limit`` bytes of UTF-8, never cutting a character in two."""
    return text.encode("utf-8", "backslashreplace")[:limit].decode("utf-8", "ignore").encode()


def _log_event(raw: RawRecord, event: object, outcome: Outcome, seconds: float) -> None:
    """The one canonical line per event."""
    event_id = getattr(event, "id", None)
    subject = getattr(event, "ocitag_id", None) or getattr(event, "subject", None)
    log.info(
        "event",
        event_id=event_id,
        ocitag_id=subject,
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        status=outcome.status,
        change=outcome.change,
        replay=outcome.replay,
        duration_ms=round(seconds * 1000, 2),
    )
