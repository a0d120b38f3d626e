"""Records the Kafka client cannot read (a header key that is not UTF-8, a codec it
lacks): found, the records before them worked as usual, then each rejected alone (400)
and its partition moved past it.

aiokafka fails the whole fetch on such a record and may have moved the position past
records it did not return. So every partition goes back to the offset after what was
handed to batches, and each is stepped through one record at a time until the one that
fails is found; the partition is then held (paused) while the records before it are
fetched, never more than up to it, and the bad one is handed over as a record of its own
with what could be read of its bytes (``worker.rawrecords``) for its dead letter.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Protocol

import structlog
from aiokafka import TopicPartition

from worker.consumer import Consumer, to_raw
from worker.errors import FatalError, describe
from worker.events import RawRecord
from worker.rawrecords import RawParts

log = structlog.get_logger("worker.unreadable")

MAX_PROBE_RECORDS = 100_000

#: (partition, records, what could be read of an unreadable record)
Start = Callable[[TopicPartition, list[RawRecord], RawRecord | None], None]


class RawReader(Protocol):
    """Reads what it can of one record (``worker.rawrecords.RawFetcher``)."""

    async def read(self, tp: TopicPartition, offset: int) -> RawParts | None: ...


class Unreadable:
    """The unreadable records found, one per partition at most: (offset, reason)."""

    def __init__(
        self, consumer: Consumer, reader: RawReader | None, topic: str, max_batch: int
    ) -> None:
        self._consumer = consumer
        self._reader = reader
        self._topic = topic
        self._max_batch = max_batch
        self._found: dict[TopicPartition, tuple[int, str]] = {}

    def held(self) -> Collection[TopicPartition]:
        """Partitions held back until their unreadable record is handed over."""
        return self._found.keys()

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        for tp in partitions:
            self._found.pop(tp, None)

    async def locate(
        self,
        exc: BaseException,
        busy: Collection[TopicPartition],
        handed: Mapping[TopicPartition, int],
    ) -> None:
        """A fetch failed on a record the client cannot read: find it (or stop, if no
        partition has one: then the failure is not about a record)."""
        reason = describe(exc)[:300]
        candidates = [
            tp for tp in self._consumer.assignment() if tp not in busy and tp not in self._found
        ]
        for tp in candidates:
            if tp in handed:
                self._consumer.seek(tp, handed[tp])
        for tp in candidates:
            start = await self._consumer.position(tp)
            found = await self._probe(tp)
            self._consumer.seek(tp, start)
            if found is not None:
                self._found[tp] = (found, reason)
                log.error("unreadable_record", partition=tp.partition, offset=found, error=reason)
                return
        raise FatalError(f"a record on {self._topic} cannot be read: {reason}")

    async def _probe(self, tp: TopicPartition) -> int | None:
        self._consumer.resume(tp)
        try:
            for _ in range(MAX_PROBE_RECORDS):
                position = await self._consumer.position(tp)
                try:
                    got = await self._consumer.getmany(tp, timeout_ms=1_000, max_records=1)
                except Exception:  # the record we are looking for
                    return position
                if not got.get(tp):
                    return None
            return None
        finally:
            self._consumer.pause(tp)

    async def advance(self, busy: Collection[TopicPartition], start: Start) -> None:
        """Work the records before an unreadable one, then hand it over alone."""
        for tp, (bad, reason) in list(self._found.items()):
            if tp in busy:
                continue
            if tp not in self._consumer.assignment():
                del self._found[tp]
                continue
            position = await self._consumer.position(tp)
            if position >= bad:
                del self._found[tp]
                bare = RawRecord(tp.topic, tp.partition, bad, 0, None, None, (), reason)
                start(tp, [bare], await self._recover(tp, bare))
                continue
            self._consumer.resume(tp)
            try:
                # never more than up to the bad record: the client must not reach it
                limit = min(bad - position, self._max_batch)
                got = await self._consumer.getmany(tp, timeout_ms=200, max_records=limit)
            finally:
                self._consumer.pause(tp)
            if got.get(tp):
                start(tp, [to_raw(r) for r in got[tp]], None)

    async def _recover(self, tp: TopicPartition, bare: RawRecord) -> RawRecord | None:
        if self._reader is None:
            return None
        parts = await self._reader.read(tp, bare.offset)
        if parts is None:
            return None
        return RawRecord(
            bare.topic,
            bare.partition,
            bare.offset,
            parts.timestamp_ms,
            parts.key,
            parts.value,
            parts.headers,
            bare.unreadable,
        )
