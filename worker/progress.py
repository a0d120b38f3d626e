"""How far the worker is behind, as gauges: records in flight, the age of the oldest
unprocessed one, and the lag of each assigned partition (its end offset minus the
committed one). The lag wants the committed offsets: the group's as read on assignment
until this worker commits its own (only for the gauge, never a floor for what it
commits), fetched after the assignment callback, bounded, in the background (the group
is not heartbeating while the callback runs).

The gauges are refreshed at most every ``REFRESH_SECONDS`` (the poll loop asks after
every poll: at low rates about once a batch, and a refresh — every in-flight record
looked at, a labelled lag series set per partition — cost about what a small batch's
metrics do; a scrape every 15 s or so needs nothing fresher)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from worker import metrics
from worker.batches import Batch
from worker.consumer import Consumer

#: how long reading one partition's committed offset may take, on assignment
COMMITTED_TIMEOUT_SECONDS = 5
#: the gauges are at most this old (in seconds) while the poll loop runs
REFRESH_SECONDS = 0.5


class Progress:
    """The gauges of one consumer; ``own`` is what this worker committed itself."""

    def __init__(
        self,
        consumer: Consumer,
        own: Mapping[TopicPartition, int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._own = own
        self._group: dict[TopicPartition, int] = {}
        self._loading: asyncio.Task[None] | None = None
        self._clock = clock
        self._due = clock()

    def update(self, batches: Mapping[TopicPartition, Batch]) -> None:
        """Refresh the gauges, unless they were refreshed less than REFRESH_SECONDS ago."""
        now = self._clock()
        if now < self._due:
            return
        self._due = now + REFRESH_SECONDS
        records = [r for b in batches.values() for r in b.records]
        metrics.IN_FLIGHT.set(len(records))
        # a bare unreadable record has no timestamp (0): not 56 years old
        oldest = min((r.timestamp_ms for r in records if r.timestamp_ms > 0), default=None)
        metrics.OLDEST_UNPROCESSED_AGE.set(
            0 if oldest is None else max(0.0, time.time() - oldest / 1000)
        )
        committed = {**self._group, **self._own}
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            done = committed.get(tp)
            if end is not None and done is not None:
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, end - done))

    def assigned(self, partitions: list[TopicPartition]) -> None:
        self._loading = asyncio.create_task(self._load(partitions))

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Called before the committer forgets them: their lag series go."""
        for tp in partitions:
            if tp in self._own or tp in self._group:
                metrics.CONSUMER_LAG.remove(str(tp.partition))
            self._group.pop(tp, None)

    async def _load(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            with contextlib.suppress(KafkaError, TimeoutError):
                committed = await asyncio.wait_for(
                    self._consumer.committed(tp), COMMITTED_TIMEOUT_SECONDS
                )
                if committed is not None:
                    self._group[tp] = committed
