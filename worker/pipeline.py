"""The consume → apply → publish → commit loop.

Rules (aiokafka's consumer rules; docs/contract.md "Semantics", Delivery):
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
from collections import Counter
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
from worker.outcomes import Outcome, OutcomeContext, internal_outcome, undecodable_outcome
from worker.plan import Item
from worker.settings import Settings
from worker.store import EventStore

log = structlog.get_logger("worker.pipeline")
T = TypeVar("T")

COMMIT_TIMEOUT_SECONDS = 30.0
MAX_PROBE_RECORDS = 100_000
# Kafka's default message size is about 1 MB; a dead letter is the record plus headers
MAX_DEAD_LETTER_VALUE = 1_000_000
_STAGE_FETCH = metrics.BATCH_STAGE_SECONDS.labels("fetch")
_STAGE_DECODE = metrics.BATCH_STAGE_SECONDS.labels("decode")
_STAGE_APPLY = metrics.BATCH_STAGE_SECONDS.labels("apply")
_STAGE_PRODUCE = metrics.BATCH_STAGE_SECONDS.labels("produce")
_STAGE_COMMIT = metrics.BATCH_STAGE_SECONDS.labels("commit")


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
    #: wall-clock time of the fetch, against the records' Kafka timestamps
    fetched_wall: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None
    give_up: asyncio.Event = field(default_factory=asyncio.Event)
    retrying: bool = False
    committed: bool = False

    @property
    def next_offset(self) -> int:
        return self.records[-1].offset + 1


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
        unreadable=None,
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
        # the offset after the last record handed to a batch, per partition: where the
        # consumer must be if a fetch fails half-way (aiokafka may have moved past
        # records it could not return)
        self._handed: dict[TopicPartition, int] = {}
        # partitions with a record the Kafka client cannot read: (offset, reason)
        self._unreadable: dict[TopicPartition, tuple[int, str]] = {}
        self._fatal: BaseException | None = None
        self._stopping = False
        self._lag_task: asyncio.Task[None] | None = None
        self._log_events = settings.log_level in {"debug", "info"}
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
                if self._fatal is not None or stop.is_set():
                    break  # what was just fetched is not started: nothing commits past it
                now = time.monotonic()
                for tp, records in fetched.items():
                    if records:
                        self._start(tp, [to_raw(r) for r in records], now)
                await self._advance_unreadable()
                self._update_gauges()
        finally:
            await self.drain(self._settings.shutdown_grace_seconds)
        if self._fatal is not None:
            raise self._fatal

    async def _fetch(self) -> dict[TopicPartition, list[Any]]:
        """One poll. A broker that is away makes it fail: wait a little and poll again
        (the consumer reconnects by itself). Refused credentials or rights stop the
        worker; any other failure is a record the client cannot read."""
        try:
            fetched: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
                timeout_ms=self._settings.poll_timeout_ms,
                max_records=self._settings.max_batch_records,
            )
            self._fetch_backoff.attempt = 0
            return fetched
        except Exception as exc:
            error = classify_kafka_error(exc, "fetching")
            if isinstance(error, FatalError):
                raise error from exc
            if isinstance(error, TransientError) and isinstance(exc, KafkaError):
                metrics.KAFKA_RETRIES.labels(cause=error.cause).inc()
                log.warning("fetch_failed", error=str(exc), attempt=self._fetch_backoff.attempt)
                await asyncio.sleep(self._fetch_backoff.next_delay())
                return {}
            # A record the client cannot read (a header key that is not UTF-8, a codec
            # it lacks): find it, process what comes before it, reject it alone.
            await self._locate_unreadable(exc)
            return {}

    def _flow_control(self) -> None:
        """Pause partitions with a batch in flight; pause all while the cap is reached."""
        assigned = self._consumer.assignment()
        full = self._full()
        held = self._batches.keys() | self._unreadable.keys()
        to_pause = [tp for tp in assigned if full or tp in held]
        to_resume = [tp for tp in assigned if not full and tp not in held]
        if to_pause:
            self._consumer.pause(*to_pause)
        if to_resume:
            self._consumer.resume(*to_resume)

    def _full(self) -> bool:
        in_flight = sum(len(b.records) for b in self._batches.values())
        return in_flight >= self._settings.max_in_flight_records

    def _start(self, tp: TopicPartition, records: list[RawRecord], now: float) -> None:
        self._consumer.pause(tp)
        self._handed[tp] = records[-1].offset + 1
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
            self._after_batch(batch)

    def _after_batch(self, batch: _Batch) -> None:
        """Where the partition goes on: after a commit it resumes (unless the in-flight
        cap is reached: then flow control resumes it); after a failure nothing of it is
        started again; a batch given up while the partition stays ours is fetched again."""
        tp = batch.tp
        if self._fatal is not None or self._stopping or tp not in self._consumer.assignment():
            return
        if batch.committed:
            if batch.records[-1].unreadable:  # the client cannot step over it by itself
                self._consumer.seek(tp, batch.next_offset)
            # at once, not at the next poll: the poll in progress would sit out its
            # timeout with every other partition paused (flow control re-checks the cap)
            if tp not in self._unreadable and not self._full():
                self._consumer.resume(tp)
            return
        # given up while still ours (a commit lost to a rebalance): fetch it again
        self._consumer.seek(tp, batch.records[0].offset)
        self._handed[tp] = batch.records[0].offset

    # ---- one batch of one partition

    async def _process(self, batch: _Batch) -> None:
        started = time.monotonic()
        oldest = min((r.timestamp_ms for r in batch.records if r.timestamp_ms > 0), default=None)
        if oldest is not None:
            _STAGE_FETCH.observe(max(0.0, batch.fetched_wall - oldest / 1000))
        decoded = [decode(r, self._settings.max_event_bytes) for r in batch.records]
        decoded_at = time.monotonic()
        _STAGE_DECODE.observe(decoded_at - started)
        outcomes = await self._retrying(batch, lambda: self._apply_and_publish(batch, decoded))
        published = time.monotonic()
        await self._retrying(batch, lambda: self._commit(batch.tp, batch.next_offset))
        batch.committed = True
        done = time.monotonic()
        _STAGE_COMMIT.observe(done - published)
        metrics.BATCH_SECONDS.observe(done - started)
        metrics.BATCH_EVENTS.observe(len(batch.records))
        elapsed = done - batch.fetched_at
        counts = Counter(
            (str(o.status), o.change or "none", "true" if o.replay else "false") for o in outcomes
        )
        for labels, count in counts.items():
            metrics.OUTCOMES.labels(*labels).inc(count)
        for _ in outcomes:
            metrics.EVENT_SECONDS.observe(elapsed)
        if self._log_events:  # the line's fields cost even when the level drops it
            for raw, event, outcome in zip(batch.records, decoded, outcomes, strict=True):
                _log_event(raw, event, outcome, elapsed)

    async def _apply_and_publish(
        self, batch: _Batch, decoded: Sequence[TagMoved | Invalid | Undecodable]
    ) -> list[Outcome]:
        processed_at = datetime.now(UTC)
        items = [
            Item(raw, event)
            for raw, event in zip(batch.records, decoded, strict=True)
            if not isinstance(event, Undecodable)
        ]
        started = time.monotonic()
        applied = iter(await self._apply(items, processed_at))
        applied_at = time.monotonic()
        _STAGE_APPLY.observe(applied_at - started)
        messages: list[Message] = []
        outcomes: list[Outcome] = []
        for raw, event in zip(batch.records, decoded, strict=True):
            if isinstance(event, Undecodable):
                outcome = undecodable_outcome(self._ctx, raw, event)
                messages.append(self._dead_letter(raw, event))
            else:
                outcome = next(applied)
            outcomes.append(outcome)
            messages.append(
                (self._settings.outcome_topic, outcome.key, outcome.value, outcome.headers)
            )
        await self._producer.send_all(messages)
        _STAGE_PRODUCE.observe(time.monotonic() - applied_at)
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
                outcomes.append(internal_outcome(self._ctx, item, str(exc)[:200]))
        return outcomes

    def _dead_letter(self, raw: RawRecord, event: Undecodable) -> Message:
        headers = [
            *raw.headers,
            ("ocitag_dlq_topic", raw.topic.encode()),
            ("ocitag_dlq_partition", str(raw.partition).encode()),
            ("ocitag_dlq_offset", str(raw.offset).encode()),
            ("ocitag_dlq_status", str(event.problem.status).encode()),
            ("ocitag_dlq_reason", _truncate_utf8(event.problem.detail, 1000)),
        ]
        value = raw.value
        if value is not None and len(value) > MAX_DEAD_LETTER_VALUE:
            # the copy (value plus these headers) would exceed the broker's message size
            headers.append(("ocitag_dlq_value_omitted_bytes", str(len(value)).encode()))
            value = None
        return (self._settings.dlq_topic, raw.key, value, headers)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            # aiokafka retries a commit for as long as the coordinator is away: bound it,
            # so that the batch can be given up on revocation or shutdown
            await asyncio.wait_for(self._consumer.commit({tp: offset}), COMMIT_TIMEOUT_SECONDS)
        except (CommitFailedError, IllegalStateError) as exc:
            # the partition went to another member, which redoes the batch with the same
            # outcomes (they are stored); this member stops working on it
            log.warning("commit_lost", partition=tp.partition, offset=offset, error=str(exc))
            raise _GiveUpError from exc
        except TimeoutError as exc:
            raise TransientError("kafka_commit_timeout", f"commit of {tp}") from exc
        except KafkaError as exc:
            raise classify_kafka_error(exc, "committing offsets") from exc
        self._committed[tp] = offset
        metrics.LAST_COMMIT.set(time.time())

    async def _retrying(self, batch: _Batch, work: Callable[[], Awaitable[T]]) -> T:
        backoff = Backoff(
            self._settings.retry_backoff_initial_seconds, self._settings.retry_backoff_max_seconds
        )
        while True:
            if batch.give_up.is_set() or batch.tp not in self._consumer.assignment():
                raise _GiveUpError
            try:
                result = await work()
                batch.retrying = False
                return result
            except TransientError as exc:
                counter = metrics.DB_RETRIES if exc.service == "db" else metrics.KAFKA_RETRIES
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
                batch.retrying = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(batch.give_up.wait(), timeout=delay)

    # ---- records the Kafka client cannot read

    async def _locate_unreadable(self, exc: BaseException) -> None:
        """A fetch failed on a record the client cannot read. aiokafka may have moved
        the position past records it could not return, so every partition goes back to
        the offset after what was handed to batches; then each is stepped through one
        record at a time until the one that fails is found."""
        reason = f"{type(exc).__name__}: {exc}"[:300]
        candidates = [
            tp
            for tp in self._consumer.assignment()
            if tp not in self._batches and tp not in self._unreadable
        ]
        for tp in candidates:
            if tp in self._handed:
                self._consumer.seek(tp, self._handed[tp])
        for tp in candidates:
            start = await self._consumer.position(tp)
            found = await self._probe(tp)
            self._consumer.seek(tp, start)
            if found is not None:
                self._unreadable[tp] = (found, reason)
                log.error("unreadable_record", partition=tp.partition, offset=found, error=reason)
                return
        raise FatalError(f"a record on {self._settings.input_topic} cannot be read: {reason}")

    async def _probe(self, tp: TopicPartition) -> int | None:
        self._consumer.resume(tp)
        try:
            for _ in range(MAX_PROBE_RECORDS):
                position: int = await self._consumer.position(tp)
                try:
                    got = await self._consumer.getmany(tp, timeout_ms=1_000, max_records=1)
                except Exception:  # the record we are looking for
                    return position
                if not got.get(tp):
                    return None
            return None
        finally:
            self._consumer.pause(tp)

    async def _advance_unreadable(self) -> None:
        """Work the records before an unreadable one, then reject it alone (400)."""
        for tp, (bad, reason) in list(self._unreadable.items()):
            if tp in self._batches:
                continue
            if tp not in self._consumer.assignment():
                del self._unreadable[tp]
                continue
            position = await self._consumer.position(tp)
            if position >= bad:
                del self._unreadable[tp]
                unreadable = RawRecord(tp.topic, tp.partition, bad, 0, None, None, (), reason)
                self._start(tp, [unreadable], time.monotonic())
                continue
            self._consumer.resume(tp)
            try:
                # never more than up to the bad record: the client must not reach it
                limit = min(bad - position, self._settings.max_batch_records)
                got = await self._consumer.getmany(tp, timeout_ms=200, max_records=limit)
            finally:
                self._consumer.pause(tp)
            if got.get(tp):
                self._start(tp, [to_raw(r) for r in got[tp]], time.monotonic())

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
        for tp in assigned:
            self._handed.pop(tp, None)
            self._unreadable.pop(tp, None)
        # The lag gauge wants the committed offsets; the group is not heartbeating while
        # this callback runs, so they are fetched after it, bounded, in the background.
        self._lag_task = asyncio.create_task(self._load_committed(list(assigned)))
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    async def _load_committed(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            with contextlib.suppress(KafkaError, TimeoutError):
                committed = await asyncio.wait_for(self._consumer.committed(tp), 5)
                if committed is not None and tp not in self._committed:
                    self._committed[tp] = committed

    async def drain(self, grace: float) -> None:
        """Let in-flight batches finish within the grace period; give up the rest."""
        self._stopping = True
        await self._finish(list(self._batches.values()), grace)

    async def _finish(self, batches: list[_Batch], grace: float) -> None:
        tasks = [b.task for b in batches if b.task is not None]
        if not tasks:
            log.info("drained", finished=0, given_up=0)
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
