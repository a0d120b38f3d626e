"""The poll loop: fetch, hand each fetch's records to one run (a batch per partition,
applied and published together), flow control, rebalances and shutdown. A run is done by
``worker.batches``; offsets are committed by ``worker.commits``; records the client
cannot read are tracked by ``worker.unreadable``.

Rules (aiokafka's consumer rules; docs/contract.md "Semantics", Delivery):
- partitions are worked concurrently, each strictly in order: a partition is paused
  while a batch of it is in flight, so the next fetch of it starts after that batch; a
  fetch's small batches share one run (one transaction, one send), a large one is a run
  of its own (``worker.batches.runs_of``), and runs overlap;
- a batch's offset (last + 1) is committed only after its database transaction has
  committed and Kafka acknowledged every outcome (acks=all); the commit itself runs in
  the background, so the partition's next batch does not wait for it;
- the poll loop never waits on work: it keeps calling ``getmany`` (heartbeats, group
  membership, ``max_poll_interval_ms``) while batches run, and pauses everything when
  the cap on records in flight is reached;
- after a fatal error nothing more is started, and nothing past the failed batch is
  committed: what was fetched and not committed is redelivered to the next worker;
- on revocation, in-flight runs holding the revoked partitions are finished and their
  offsets committed (or given up, to be redelivered) before the partitions go; a batch
  given up while its partition stays ours is fetched again from its first record (a run
  is given up whole: its other partitions are fetched again too);
- a transient fault retries the same run with the one backoff policy
  (``worker.retry``), every partition of it paused, membership kept; a permanent one
  rejects that one event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from worker import metrics
from worker.batches import Batch, BatchRunner, GiveUpError, runs_of
from worker.commits import Committer
from worker.consumer import Consumer, Record, to_raw
from worker.errors import FatalError, TransientError
from worker.events import RawRecord
from worker.health import POLL_LOOP, Health
from worker.kafka import classify_kafka_error
from worker.progress import Progress
from worker.retry import Backoff, retry_failed
from worker.settings import Settings
from worker.unreadable import Unreadable

log = structlog.get_logger("worker.pipeline")


class Pipeline(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        runner: BatchRunner,
        unreadable: Unreadable,
        health: Health,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._runner = runner
        self._unreadable = unreadable
        self._health = health
        self._batches: dict[TopicPartition, Batch] = {}
        self._committer = Committer(
            consumer,
            Backoff(
                settings.lifecycle.retry_backoff_initial_seconds,
                settings.lifecycle.retry_backoff_max_seconds,
            ),
            on_fatal=self._set_fatal,
            interval=settings.consumer.commit_interval_ms / 1000,
        )
        # the offset after the last record handed to a batch, per partition: where the
        # consumer must be if a fetch fails half-way (aiokafka may have moved past
        # records it could not return)
        self._handed: dict[TopicPartition, int] = {}
        self._fatal: BaseException | None = None
        self._stopping = False
        self._progress = Progress(consumer, self._committer.committed)
        self._fetch_backoff = Backoff(
            settings.lifecycle.retry_backoff_initial_seconds,
            settings.lifecycle.retry_backoff_max_seconds,
        )

    # ---- the poll loop

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set (or a fatal error), then drain and commit."""
        committer = asyncio.create_task(self._committer.run(), name="committer")
        committer.add_done_callback(self._committer_ended)
        try:
            while not stop.is_set() and self._fatal is None:
                self._health.beat(POLL_LOOP)
                self._flow_control()
                fetched = await self._fetch()
                if self._fatal is not None or stop.is_set():
                    break  # what was just fetched is not started: nothing commits past it
                batches = [
                    Batch(tp, [to_raw(r) for r in records], time.monotonic())
                    for tp, records in fetched.items()
                    if records
                ]
                for run in runs_of(batches):
                    self._start_run(run)
                await self._unreadable.advance(self._batches.keys(), self._start)
                self._progress.update(self._batches)
        finally:
            try:
                await self.drain(self._settings.lifecycle.shutdown_grace_seconds)
            finally:
                committer.remove_done_callback(self._committer_ended)
                committer.cancel()
                await asyncio.gather(committer, return_exceptions=True)
        if self._fatal is not None:
            raise self._fatal

    def _set_fatal(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc

    def _committer_ended(self, task: asyncio.Task[None]) -> None:
        """The committer only ends when cancelled: anything else is a bug, and nothing
        could be committed any more."""
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error("committer_failed", error=repr(error))
            self._set_fatal(error)

    async def _fetch(self) -> Mapping[TopicPartition, Sequence[Record]]:
        """One poll. A broker that is away makes it fail: wait a little and poll again
        (the consumer reconnects by itself). Refused credentials or rights stop the
        worker; any other failure is a record the client cannot read."""
        try:
            fetched = await self._consumer.getmany(
                timeout_ms=self._settings.consumer.poll_timeout_ms,
                max_records=self._settings.consumer.max_batch_records,
            )
            self._fetch_backoff.reset()
            return fetched
        except Exception as exc:
            error = classify_kafka_error(exc, "fetching")
            if isinstance(error, FatalError):
                raise error from exc
            if isinstance(error, TransientError) and isinstance(exc, KafkaError):
                if not retry_failed(error):  # an outage is logged once, not per poll
                    log.warning("fetch_failed", error=str(exc), attempt=self._fetch_backoff.attempt)
                # the backoff may outlast the liveness timeout: waiting for Kafka is alive
                self._health.waiting(POLL_LOOP, "Kafka")
                await asyncio.sleep(self._fetch_backoff.next_delay())
                return {}
            await self._unreadable.locate(exc, self._batches.keys(), self._handed)
            return {}

    def _flow_control(self) -> None:
        """Pause partitions with a batch in flight; pause all while the cap is reached."""
        assigned = self._consumer.assignment()
        full = self._full()
        held = self._batches.keys() | set(self._unreadable.held())
        to_pause = [tp for tp in assigned if full or tp in held]
        to_resume = [tp for tp in assigned if not full and tp not in held]
        if to_pause:
            self._consumer.pause(*to_pause)
        if to_resume:
            self._consumer.resume(*to_resume)

    def _full(self) -> bool:
        in_flight = sum(len(b.records) for b in self._batches.values())
        return in_flight >= self._settings.consumer.max_in_flight_records

    def _start(
        self, tp: TopicPartition, records: list[RawRecord], recovered: RawRecord | None = None
    ) -> None:
        """A run of one partition's records (the records before an unreadable one, or
        that one alone)."""
        self._start_run([Batch(tp, records, time.monotonic(), recovered)])

    def _start_run(self, batches: list[Batch]) -> None:
        """One task applies and publishes ``batches`` (each of its own partition)
        together; they share its ``give_up``."""
        if not batches:
            return
        give_up = batches[0].give_up
        for batch in batches:
            self._consumer.pause(batch.tp)
            self._handed[batch.tp] = batch.next_offset
            batch.give_up = give_up
            self._batches[batch.tp] = batch
        task = asyncio.create_task(
            self._run(batches), name="run-" + ",".join(str(b.tp.partition) for b in batches)
        )
        for batch in batches:
            batch.task = task
        metrics.EVENTS_CONSUMED.inc(sum(len(b.records) for b in batches))

    async def _run(self, batches: list[Batch]) -> None:
        partitions = sorted(b.tp.partition for b in batches)
        records = sum(len(b.records) for b in batches)
        try:
            await self._runner.run(batches)
            for batch in batches:
                self._committer.done(batch.tp, batch.next_offset)
        except GiveUpError:
            log.info("batch_abandoned", partitions=partitions, records=records)
        except asyncio.CancelledError:
            log.info("batch_cancelled", partitions=partitions, records=records)
            raise
        except FatalError as exc:
            self._set_fatal(exc)
        except Exception as exc:  # a bug: stop rather than commit past unprocessed records
            log.exception("batch_failed", partitions=partitions)
            self._set_fatal(exc)
        finally:
            for batch in batches:
                if self._batches.get(batch.tp) is batch:
                    del self._batches[batch.tp]
            # each partition of the run is settled even if another's raises (then, as after
            # any fatal error, the rest stay paused: nothing more starts)
            for batch in batches:
                try:
                    self._after_batch(batch)
                except Exception as exc:  # a bug
                    log.exception("batch_failed", partitions=[batch.tp.partition])
                    self._set_fatal(exc)

    def _after_batch(self, batch: Batch) -> None:
        """Where the partition goes on: once its batch is published it resumes (unless the
        in-flight cap is reached: then flow control resumes it); after a failure nothing
        of it is started again; a batch given up while the partition stays ours is
        fetched again."""
        tp = batch.tp
        if self._fatal is not None or self._stopping or tp not in self._consumer.assignment():
            return
        if batch.published:
            if batch.records[-1].unreadable:  # the client cannot step over it by itself
                self._consumer.seek(tp, batch.next_offset)
            # at once, not at the next poll: the poll in progress would sit out its
            # timeout with every other partition paused (flow control re-checks the cap)
            if tp not in self._unreadable.held() and not self._full():
                self._consumer.resume(tp)
            return
        # given up while still ours (revocation began while it waited for a service):
        # fetch it again
        self._consumer.seek(tp, batch.records[0].offset)
        self._handed[tp] = batch.records[0].offset

    # ---- rebalances and shutdown

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Finish (and commit) the revoked partitions' batches before they go; a batch
        stuck retrying is given up and will be redelivered to the next owner."""
        if not revoked:  # every join before the first assignment: nothing to finish or say
            return
        batches = [self._batches[tp] for tp in revoked if tp in self._batches]
        finished, given_up = await self._finish_and_commit(
            batches, revoked, self._settings.lifecycle.shutdown_grace_seconds
        )
        self._progress.revoked(revoked)
        self._committer.forget(revoked)
        log.info(
            "partitions_revoked",
            partitions=sorted(tp.partition for tp in revoked),
            finished=finished,
            given_up=given_up,
        )

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        metrics.ASSIGNED_PARTITIONS.set(len(self._consumer.assignment()))
        for tp in assigned:
            self._handed.pop(tp, None)
        self._unreadable.forget(assigned)
        self._progress.assigned(list(assigned))
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    async def drain(self, grace: float) -> None:
        """Let in-flight batches finish within the grace period, give up the rest, and
        commit what is done."""
        self._stopping = True
        finished, given_up = await self._finish_and_commit(
            list(self._batches.values()), None, grace
        )
        log.info("drained", finished=finished, given_up=given_up)

    async def _finish_and_commit(
        self, batches: list[Batch], partitions: list[TopicPartition] | None, grace: float
    ) -> tuple[int, int]:
        """``finish`` the batches, then commit the done offsets of ``partitions`` (all
        when None) in what is left of ``grace`` (a second at least: a commit round trip).
        How many batches finished and how many were given up."""
        started = time.monotonic()
        counts = await finish(batches, grace)
        await self._committer.flush(partitions, max(1.0, grace - (time.monotonic() - started)))
        return counts


async def finish(batches: list[Batch], grace: float) -> tuple[int, int]:
    """Let the runs of ``batches`` finish within ``grace``; give up those retrying at
    once, and the rest when it is over (they stay uncommitted and are redelivered). How
    many runs finished and how many were given up."""
    tasks = list(dict.fromkeys(b.task for b in batches if b.task is not None))
    if not tasks:
        return 0, 0
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
    return len(done), len(pending)
