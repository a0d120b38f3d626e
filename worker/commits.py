"""Offset commits, in the background: a partition's next batch does not wait for them.

A batch is *done* once its database transaction committed and Kafka acknowledged every
outcome (acks=all); its offset (last + 1) may then be committed, and not before. Which
request carries it does not matter: one commit names every partition's latest done
offset, so a commit answers for every batch done while the previous one was on its way
(at 2,000 events/s, 0.6 commit requests per batch instead of one), and the partition is
fetched again as soon as its batch is done, not a commit round trip later.

Commits are also spaced: one starts at least ``interval`` after the previous one started
(``OCITAG_COMMIT_INTERVAL_MS``), so that at low rates, where batches are small and many,
the worker does not send a commit request (and the broker write an offsets record) for
most batches: at 175 batches a second that was ~100 requests a second, each about
0.3-0.4 ms of the worker's CPU and as much of the broker's (docs/scaling.md). A batch
done meanwhile is committed by the next one; the partition does not wait for it. What
the spacing costs is redelivery: a worker that dies redoes at most ``interval`` more of
done-but-not-committed records, whose outcomes are replayed byte for byte. Revocation
and shutdown do not wait for it (a flush cuts it short).

Nothing is lost by committing late: a record done and not yet committed when the worker
stops or loses the partition is redelivered, and its outcome replayed byte for byte from
the idempotency record. So a commit refused by a rebalance is retried for the
partitions still ours (the next generation accepts it) and forgotten for the others and
for those being revoked; a broker that is away is waited for with the one retry policy;
refused credentials, or any other error a retry cannot mend, stop the worker (nothing
could be committed any more). Revocation and shutdown flush what is pending first,
within their grace, cutting short a backoff in progress.

Written here rather than left to aiokafka's auto-commit: that commits what was
*fetched*, on a timer, not what was done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from worker import metrics, reachability
from worker.consumer import Consumer
from worker.errors import Cause, TransientError
from worker.kafka import classify_kafka_error
from worker.retry import Backoff, count_retry, retry_failed
from worker.waits import wait_at_most

log = structlog.get_logger("worker.commits")

#: aiokafka retries a commit for as long as the coordinator is away: bounded, so that a
#: flush on revocation or shutdown ends
COMMIT_TIMEOUT_SECONDS = 30.0
_STAGE_COMMIT = metrics.BATCH_STAGE_SECONDS.labels("commit")


class Committer:
    """The done offsets per partition, committed by one background task."""

    def __init__(
        self,
        consumer: Consumer,
        backoff: Backoff,
        on_fatal: Callable[[BaseException], None],
        timeout: float = COMMIT_TIMEOUT_SECONDS,
        interval: float = 0.0,
    ) -> None:
        self._consumer = consumer
        self._backoff = backoff
        self._on_fatal = on_fatal
        self._timeout = timeout
        self._interval = interval
        self._pending: dict[TopicPartition, int] = {}
        #: the last offset this worker committed per partition
        self.committed: dict[TopicPartition, int] = {}
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()  # a flush waits: cut a backoff short
        self._round = asyncio.Event()  # replaced after each round
        self._failed: BaseException | None = None
        #: the partitions of each flush in progress (a revocation's, the shutdown's; they
        #: may overlap), which it settles before they go: a refused commit gives up on
        #: them rather than retrying. One entry per flush, removed by that flush alone, so
        #: that one ending or starting does not change what another still settles.
        self._flushes: list[frozenset[TopicPartition]] = []

    def done(self, tp: TopicPartition, offset: int) -> None:
        """``offset`` (a batch's last + 1) may be committed: everything before it in
        ``tp`` is applied and its outcomes acknowledged."""
        if offset > self._pending.get(tp, self.committed.get(tp, -1)):
            self._pending[tp] = offset
            self._wake.set()

    def pending(self) -> Mapping[TopicPartition, int]:
        return self._pending

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        """Partitions no longer ours: nothing of theirs is committed any more."""
        for tp in partitions:
            self._pending.pop(tp, None)
            self.committed.pop(tp, None)

    async def run(self) -> None:
        """Commit whatever is done, as soon as it is (until cancelled or a fatal error)."""
        try:
            last = -self._interval
            while self._failed is None:
                await self._wake.wait()
                # the spacing since the last commit began (a flush waiting cuts it short)
                await self._pause(last + self._interval - time.monotonic())
                self._wake.clear()
                last = time.monotonic()
                delay = await self._commit_once()
                if delay is not None:  # a retry: its backoff
                    self._hurry.clear()
                    await self._pause(delay)
                    self._wake.set()
        except Exception as exc:  # a bug: flushes must not wait for a dead task
            self._failed = exc
            self._end_round()
            raise

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until a flush hurries."""
        if seconds > 0 and not self._hurry.is_set():
            await wait_at_most(self._hurry, seconds)

    async def flush(self, partitions: Collection[TopicPartition] | None, within: float) -> bool:
        """Until the done offsets of ``partitions`` (all when None) are committed, for at
        most ``within`` seconds (the background task does the committing). True when
        nothing of theirs is pending any more."""
        deadline = time.monotonic() + within
        leaving = frozenset(self._pending if partitions is None else partitions)
        self._flushes.append(leaving)
        try:
            while True:
                waiting = [tp for tp in self._pending if partitions is None or tp in partitions]
                if not waiting:
                    return True
                left = deadline - time.monotonic()
                if self._failed is not None or left <= 0:
                    log.warning(
                        "commit_unfinished",
                        partitions=sorted(tp.partition for tp in waiting),
                        reason="fatal error" if self._failed else "grace period over",
                    )
                    return False
                round_done = self._round
                self._wake.set()
                self._hurry.set()
                await wait_at_most(round_done, left)
        finally:
            self._flushes.remove(leaving)  # this flush's entry (an equal one is as good)
            if not self._flushes:  # another flush still waiting keeps the hurry
                self._hurry.clear()

    def _end_round(self) -> None:
        self._round.set()
        self._round = asyncio.Event()

    async def _commit_once(self) -> float | None:
        """One commit of everything pending; the delay before the next attempt when it
        must be retried, else None."""
        offsets = dict(self._pending)
        if not offsets:
            self._end_round()
            return None
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):  # not wait_for: worker/waits.py
                await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            return self._refused(offsets, exc)
        except (KafkaError, TimeoutError) as exc:
            error = classify_kafka_error(exc, "committing offsets")
            if not isinstance(error, TransientError):  # fatal, or no retry would mend it
                self._failed = error
                self._on_fatal(error)
                return None
            if not retry_failed(error):  # an outage is logged once, not per attempt
                log.warning("commit_retrying", cause=error.cause, error=str(exc)[:300])
            return self._backoff.next_delay()
        finally:
            self._end_round()
        if self._backoff.attempt:  # committed after failing: the broker is back
            reachability.KAFKA.succeeded()
        self._backoff.reset()
        _STAGE_COMMIT.observe(time.monotonic() - started)
        metrics.LAST_COMMIT.set(time.time())
        for tp, offset in offsets.items():
            self.committed[tp] = offset
            if self._pending.get(tp) == offset:
                del self._pending[tp]
        return None

    def _refused(self, offsets: Mapping[TopicPartition, int], exc: BaseException) -> float | None:
        """The group moved on (a rebalance): retry for the partitions still ours, forget
        the others and those being revoked (whoever owns them next redoes those records,
        replaying their outcomes)."""
        assigned = self._consumer.assignment().difference(*self._flushes)
        lost = sorted(tp.partition for tp in offsets if tp not in assigned)
        for tp in offsets:
            if tp not in assigned and self._pending.get(tp) == offsets[tp]:
                del self._pending[tp]
        log.warning("commit_refused", lost_partitions=lost, error=str(exc)[:300])
        if not any(tp in assigned for tp in offsets):
            return None
        count_retry(Cause.KAFKA_REBALANCE)
        return self._backoff.next_delay()
