"""One fetch's small batches, one per partition, run as one: decode → apply → publish, with
one database transaction and one send for all of them. Each partition's offset is then
committed in the background (``worker.commits``).

Why one run per fetch rather than one per partition: at a steady low rate a fetch brings
a few events of every partition, and a run per partition paid a transaction, a send and
their tasks for each (about 10 events each at 2,000 events/s on 6 partitions). Run as
one, the events share them, as the floor's one batch per fetch does (docs/scaling.md,
"One run per fetch"). ``Store.apply`` gives every event the outcome it gets however
the events are split into transactions (the store's property tests split and shuffle
them), and each partition still has one batch in flight at a time, so its order holds.
Only small batches share a run (``runs_of``: fewer than ``ALONE_FROM`` records, the
threshold group commit uses, worker/coalesce.py); a larger one is a run of its own. A
transaction's fixed cost is a few hundred µs on each side, a few µs per event of a batch
of 100, so a large batch gains nothing from company; and in a backlog the runs of
different partitions must overlap (one transaction applying while another's outcomes
are acknowledged) to keep both the worker and PostgreSQL busy.

- the outcomes and the state topic's records of the applied changes (worker/state.py)
  are published (and the undecodable records dead-lettered) only after the database
  transaction committed; the batch is done, and its offset (last + 1) may be committed,
  only once Kafka acknowledged every one of them (acks=all); a failed send retries the
  whole send, so a state record is never skipped (a duplicate is the same key and value);
- a transient fault retries the same step with the one backoff policy, for as long as
  every partition of the run is ours and it is not given up (revocation, shutdown: its
  batches share one ``give_up``, and a run given up leaves all of them to be fetched
  again);
- an event the database refuses is rejected alone (500), the others applied.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import structlog
from aiokafka import TopicPartition

from worker import metrics, tracing
from worker.coalesce import ALONE_FROM
from worker.consumer import Consumer
from worker.deadletter import DeadLetters
from worker.decode import decode
from worker.errors import PermanentError, TransientError
from worker.events import Decoded, RawRecord, Undecodable
from worker.kafka import Message
from worker.outcomes import Outcome, OutcomeContext, internal_outcome, undecodable_outcome
from worker.plan import Item
from worker.problems import Problem
from worker.retry import Backoff, retrying
from worker.settings import Settings
from worker.store import EventStore
from worker.waits import wait_at_most

log = structlog.get_logger("worker.batches")
T = TypeVar("T")

_STAGE_FETCH = metrics.BATCH_STAGE_SECONDS.labels("fetch")
_STAGE_DECODE = metrics.BATCH_STAGE_SECONDS.labels("decode")
_STAGE_APPLY = metrics.BATCH_STAGE_SECONDS.labels("apply")
_STAGE_PRODUCE = metrics.BATCH_STAGE_SECONDS.labels("produce")


class OutcomeProducer(Protocol):
    """What sends a batch's outcomes and dead letters (``worker.kafka.Producer``; fakes
    in unit tests)."""

    async def send_all(self, messages: Sequence[Message]) -> None: ...

    async def send_alone(self, messages: Sequence[Message]) -> None: ...


@dataclass
class Batch:
    """The records of one partition in one run (a run's batches share ``task`` and
    ``give_up``)."""

    tp: TopicPartition
    records: list[RawRecord]
    fetched_at: float
    #: for a record the client could not read: what could be read of it after all,
    #: for its dead letter (its outcome is built from the coordinates alone, so that
    #: every redelivery gets the same bytes)
    recovered: RawRecord | None = None
    #: wall-clock time of the fetch, against the records' Kafka timestamps
    fetched_wall: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None
    give_up: asyncio.Event = field(default_factory=asyncio.Event)
    retrying: bool = False
    #: applied and every outcome acknowledged: its offset may be committed
    published: bool = False

    @property
    def next_offset(self) -> int:
        return self.records[-1].offset + 1


def runs_of(batches: Sequence[Batch]) -> list[list[Batch]]:
    """One fetch's batches (one per partition) as runs: the small ones together, each of
    ``ALONE_FROM`` records or more alone (the module's doc)."""
    small = [b for b in batches if len(b.records) < ALONE_FROM]
    runs = [[b] for b in batches if len(b.records) >= ALONE_FROM]
    return [small, *runs] if small else runs


class GiveUpError(Exception):
    """A partition of the run was revoked or the worker is stopping: leave the run
    unfinished, it will be redelivered."""


class BatchRunner:
    """Runs batches; holds no state of its own between them."""

    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        producer: OutcomeProducer,
        store: EventStore,
        dead_letters: DeadLetters,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._store = store
        self._dead_letters = dead_letters
        self._ctx = OutcomeContext.of(settings.contract)
        self._log_events = settings.process.log_level in {"debug", "info"}
        self._state_topic = settings.topics.state_topic  # empty: off

    async def run(self, batches: Sequence[Batch]) -> None:
        """Process and publish ``batches`` (one fetch's, each of its own partition) as one;
        raises GiveUpError, FatalError or a bug."""
        started = time.monotonic()
        records = [r for b in batches for r in b.records]
        oldest = min((r.timestamp_ms for r in records if r.timestamp_ms > 0), default=None)
        if oldest is not None:
            fetched = max(b.fetched_wall for b in batches)
            _STAGE_FETCH.observe(max(0.0, fetched - oldest / 1000))
        decoded = [decode(r, self._settings.contract.max_event_bytes) for r in records]
        _STAGE_DECODE.observe(time.monotonic() - started)
        recovered = {(b.tp.topic, b.tp.partition): b.recovered for b in batches if b.recovered}
        tracer = tracing.current()
        traced: tracing.BatchTrace | None = None
        if tracer is None:
            outcomes = await self._retrying(
                batches, lambda: self._apply_and_publish(records, decoded, recovered)
            )
        else:
            with tracer.batch(records, self._settings.kafka.group_id) as traced:
                outcomes = await self._retrying(
                    batches,
                    lambda: self._apply_and_publish(records, decoded, recovered, traced),
                )
            traced.finish(decoded, [(o.status, o.value) for o in outcomes])
        for batch in batches:
            batch.published = True
        done = time.monotonic()
        metrics.BATCH_SECONDS.observe(done - started)
        metrics.BATCH_EVENTS.observe(len(records))
        elapsed = done - min(b.fetched_at for b in batches)
        counts = Counter(
            (str(o.status), o.change or "none", "true" if o.replay else "false") for o in outcomes
        )
        for labels, count in counts.items():
            metrics.OUTCOMES.labels(*labels).inc(count)
        if self._state_topic:
            kinds = Counter(o.state.kind for o in outcomes if o.state is not None)
            for kind, count in kinds.items():
                metrics.STATE_RECORDS.labels(kind).inc(count)
        repointed = sum(1 for o in outcomes if o.repointed and not o.replay)
        if repointed:
            metrics.REPOINTED.inc(repointed)
        metrics.observe_many(metrics.EVENT_SECONDS, elapsed, len(outcomes))
        if self._log_events:  # the line's fields cost even when the level drops it
            for index, (raw, event, outcome) in enumerate(
                zip(records, decoded, outcomes, strict=True)
            ):
                ids = traced.log_fields(index) if traced is not None else None
                _log_event(raw, event, outcome, elapsed, ids)

    async def _apply_and_publish(
        self,
        records: Sequence[RawRecord],
        decoded: Sequence[Decoded],
        recovered: Mapping[tuple[str, int], RawRecord],
        traced: tracing.BatchTrace | None = None,
    ) -> list[Outcome]:
        """``recovered``: for a record the client could not read, by its (topic,
        partition), what could be read of it after all, for its dead letter."""
        processed_at = datetime.now(UTC)
        items = [
            Item(raw, event)
            for raw, event in zip(records, decoded, strict=True)
            if not isinstance(event, Undecodable)
        ]
        started = time.monotonic()
        applied = iter(await self.apply(items, processed_at))
        applied_at = time.monotonic()
        _STAGE_APPLY.observe(applied_at - started)
        rejected: list[tuple[RawRecord, Problem]] = []
        outcomes: list[Outcome] = []
        for raw, event in zip(records, decoded, strict=True):
            if isinstance(event, Undecodable):
                outcome = undecodable_outcome(self._ctx, raw, event)
                copy = recovered.get((raw.topic, raw.partition), raw) if raw.unreadable else raw
                rejected.append((copy, event.problem))
            else:
                outcome = next(applied)
            outcomes.append(outcome)
        await self._dead_letters.send(rejected)
        topic = self._settings.topics.outcome_topic
        messages = [Message(topic, o.key, o.value, o.headers) for o in outcomes]
        events = list(range(len(outcomes)))  # the batch record each message answers
        state_topic = self._state_topic  # acknowledged with the outcomes, before the commit
        if state_topic:
            for index, outcome in enumerate(outcomes):
                if (state := outcome.state) is not None:
                    messages.append(Message(state_topic, state.key, state.value, state.headers))
                    events.append(index)
        if traced is not None:  # each outcome and state record continues its event's trace
            messages = [traced.message(i, m) for i, m in zip(events, messages, strict=True)]
        await self._producer.send_all(messages)
        _STAGE_PRODUCE.observe(time.monotonic() - applied_at)
        return outcomes

    async def apply(self, items: Sequence[Item], processed_at: datetime) -> list[Outcome]:
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
                log.error(
                    "event_refused",
                    error=str(exc),
                    partition=item.record.partition,
                    offset=item.record.offset,
                )
                outcomes.append(internal_outcome(self._ctx, item, str(exc)[:200]))
        return outcomes

    async def _retrying(self, batches: Sequence[Batch], work: Callable[[], Awaitable[T]]) -> T:
        """Retry ``work`` while it fails transiently, partitions paused, for as long as
        every partition of the run is ours and the run is not given up."""

        async def attempt() -> T:
            assigned = self._consumer.assignment()
            if any(b.give_up.is_set() or b.tp not in assigned for b in batches):
                raise GiveUpError
            return await work()

        def report(error: TransientError, attempt: int, delay: float) -> None:
            for batch in batches:
                batch.retrying = True
            if error.cause.outage:  # logged once per outage (worker/reachability.py)
                return
            log.warning(
                "retrying",
                cause=error.cause,
                error=str(error)[:300],
                attempt=attempt,
                delay_seconds=round(delay, 3),
                partitions=sorted(b.tp.partition for b in batches),
            )

        async def wait(delay: float) -> None:
            await wait_at_most(batches[0].give_up, delay)

        backoff = Backoff(
            self._settings.lifecycle.retry_backoff_initial_seconds,
            self._settings.lifecycle.retry_backoff_max_seconds,
        )
        result = await retrying(attempt, backoff, wait=wait, on_retry=report)
        for batch in batches:
            batch.retrying = False
        return result


def _log_event(
    raw: RawRecord,
    event: object,
    outcome: Outcome,
    seconds: float,
    trace_ids: dict[str, str] | None = None,
) -> None:
    """The one canonical line per event (with its span's ids while tracing is on)."""
    event_id = getattr(event, "id", None)
    subject = getattr(event, "ocitag_id", None) or getattr(event, "subject", None)
    log.info(
        "event",
        **(trace_ids or {}),
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
