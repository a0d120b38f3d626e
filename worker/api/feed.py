"""The one consumer of the state topic per api process, fanning out to every watcher
(docs/subscribers.md "Watch"): no consumer group, every partition assigned, starting at
the end when the process starts. Each batch read is framed once and offered to every
watcher's ``Outbox``; an outbox that overflows is cut off, and nobody else waits for it.

``replay`` reads a span of the topic for one resuming watcher with a consumer of its own
(closed when the span is read), at most ``REPLAYS`` at a time per process: a resume
costs one short read, the steady state one consumer whatever the number of watchers. A
watcher whose queue overflowed while it sent a snapshot or a replay (``Offer.LEFT``)
catches up the same way: the topic holds what it missed, not the api's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from worker.api.listener import every_partition_consumer, topic_partitions
from worker.api.resume import EventIds
from worker.api.watchrules import Batch, Change, Offer, Outbox, change
from worker.consumerstop import stop_consumer
from worker.errors import describe
from worker.kafka import start_whole
from worker.settings import Settings

log = structlog.get_logger("worker.api.feed")
#: resuming watchers reading the topic at once, per process (each with its own consumer)
REPLAYS = 4
_PARTITION_CHECK_SECONDS = 30.0
_ERROR_PAUSE_SECONDS = 1.0
_VERSION_HEADER = "version"
#: the most one write of a watch joins (the transport buffers a write whole)
WRITE_BYTES = 64 * 1024


@dataclass(eq=False)
class Subscription:
    """One watcher's end of the feed. ``start``: the feed's positions when it
    subscribed (every record from there on is offered to ``outbox``); ``wake`` is set
    when something was queued or the outbox closed."""

    outbox: Outbox
    start: tuple[int, ...]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: called when the feed closes the outbox (the watcher may be stuck in a write)
    on_cut: Callable[[], None] | None = None

    def cut(self, reason: str) -> None:
        self.outbox.close(reason)
        self.wake.set()
        if self.on_cut is not None:
            self.on_cut()


class Feed(Protocol):
    #: how event ids are sealed (every frame of this feed and of its watchers)
    ids: EventIds

    def subscribe(self, limit: int) -> Subscription: ...

    def unsubscribe(self, subscription: Subscription) -> None: ...

    async def offsets(self) -> tuple[list[int], list[int]]:
        """Per partition: the first offset still stored, and the end."""
        ...

    def replay(
        self, positions: Sequence[int], until: Sequence[int]
    ) -> AsyncGenerator[list[Change], None]: ...


def version_of(headers: Sequence[tuple[str, bytes]]) -> int | None:
    """The record's ``version`` header (the state topic's format), None if absent or
    not a number."""
    for name, value in headers:
        if name == _VERSION_HEADER:
            text = value.decode("ascii", "replace")
            return int(text) if text.isascii() and text.isdigit() else None
    return None


def _key(raw: bytes | None) -> str:
    """The OCITag ID of a record ('' for a key that is not one: no watcher shows it)."""
    if raw is None:
        return ""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return ""


class Fanout:
    """The subscribers and the dispatch of a batch to them (no I/O: tested with fakes)."""

    def __init__(self, partitions: int, ids: EventIds) -> None:
        self.ids = ids
        self.positions = [0] * partitions
        self._subscriptions: set[Subscription] = set()
        #: per tag the highest version passed on since the process started: a record at
        #: or below it is an at-least-once repeat (``Change.stale``)
        self._versions: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, limit: int) -> Subscription:
        subscription = Subscription(Outbox(limit, catching_up=True), tuple(self.positions))
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def close_all(self, reason: str) -> None:
        for subscription in list(self._subscriptions):
            subscription.cut(reason)
        self._subscriptions.clear()

    def read(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        version: int | None,
    ) -> Change:
        """A record read from ``partition``: advance the positions, frame it once."""
        if partition >= len(self.positions):
            self.positions.extend([0] * (partition + 1 - len(self.positions)))
        self.positions[partition] = offset + 1
        tag = _key(key)
        stale = False
        if tag and version is not None:
            seen = self._versions.get(tag)
            stale = seen is not None and version <= seen
            if not stale:
                self._versions[tag] = version
            if value is None and not stale:
                # a deletion: forget the tag (bounds the map to live tags; a tag re-created
                # after its tombstone was pruned from the store starts again at version 1)
                self._versions.pop(tag, None)
        return change(
            partition,
            offset,
            tag,
            value=value,
            version=version,
            after=tuple(self.positions),
            ids=self.ids,
            stale=stale,
        )

    def dispatch(self, changes: Sequence[Change]) -> list[Subscription]:
        """Offer ``changes`` to every subscriber, as one ``Batch``; returns those cut off
        by it. A catching-up subscriber that overflowed is let go (it reads on from the
        topic), not cut."""
        batch = Batch(changes, WRITE_BYTES)
        cut: list[Subscription] = []
        for subscription in list(self._subscriptions):
            offer = subscription.outbox.offer(batch)
            if offer is not Offer.QUEUED:
                self._subscriptions.discard(subscription)
            if offer is Offer.CUT:
                subscription.cut(subscription.outbox.closed or "too_slow")
                cut.append(subscription)
            else:
                subscription.wake.set()
        return cut


class StateFeed:
    """The state topic's consumer (``Feed``): ``start``, then ``run`` until cancelled."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topics.state_topic
        self._consumer = every_partition_consumer(settings, "ocitag-api-state")
        tokens = settings.api.api_tokens
        self.ids = EventIds.from_tokens(tokens.get_secret_value() if tokens else None)
        self.fanout = Fanout(0, self.ids)
        self._assigned: set[TopicPartition] = set()
        self._replays = asyncio.Semaphore(REPLAYS)
        self._stopping = False

    async def start(self) -> None:
        """Connect, assign every partition at its end and resolve those positions."""
        await start_whole(self._consumer.start, self._consumer.stop)
        await self._assign_all()

    async def _assign_all(self) -> None:
        partitions = await topic_partitions(self._settings, self._topic)
        if not partitions:
            raise LookupError(f"topic {self._topic} has no partitions (OCITAG_STATE_TOPIC)")
        wanted = {TopicPartition(self._topic, p) for p in partitions}
        if wanted == self._assigned:
            return
        new = wanted - self._assigned
        first = not self._assigned
        self._consumer.assign(sorted(wanted))
        for tp in self._assigned:  # assign() forgets positions: keep those read so far
            self._consumer.seek(tp, self.fanout.positions[tp.partition])
        if first:
            await self._consumer.seek_to_end(*new)
        else:  # partitions added while running hold nothing older than this process
            await self._consumer.seek_to_beginning(*new)
        positions = list(self.fanout.positions)
        positions += [0] * (max(partitions) + 1 - len(positions))
        for tp in sorted(new):
            positions[tp.partition] = await self._consumer.position(tp)
        self.fanout.positions = positions
        self._assigned = wanted

    def subscribe(self, limit: int) -> Subscription:
        return self.fanout.subscribe(limit)

    def unsubscribe(self, subscription: Subscription) -> None:
        self.fanout.unsubscribe(subscription)

    async def offsets(self) -> tuple[list[int], list[int]]:
        tps = sorted(self._assigned)
        starts = await self._consumer.beginning_offsets(tps)
        ends = await self._consumer.end_offsets(tps)
        count = len(self.fanout.positions)
        first, last = [0] * count, [0] * count
        for tp in tps:
            first[tp.partition], last[tp.partition] = starts[tp], ends[tp]
        return first, last

    async def run(self) -> None:
        """Read and fan out until cancelled; a broker outage is waited out (the client
        reconnects by itself)."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + _PARTITION_CHECK_SECONDS
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=5_000)
                batch = [
                    self.fanout.read(r.partition, r.offset, r.key, r.value, version_of(r.headers))
                    for records in batches.values()
                    for r in records
                ]
                if batch:
                    for subscription in self.fanout.dispatch(batch):
                        log.debug("watcher_cut_off", reason=subscription.outbox.closed)
                if loop.time() >= next_check:
                    next_check = loop.time() + _PARTITION_CHECK_SECONDS
                    await self._assign_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._stopping:  # stop() stops the consumer under getmany: no error
                    log.warning("state_feed_error", error=describe(exc))
                await asyncio.sleep(_ERROR_PAUSE_SECONDS)

    async def replay(
        self, positions: Sequence[int], until: Sequence[int]
    ) -> AsyncGenerator[list[Change], None]:
        """The records from ``positions`` up to (not including) ``until``, per partition,
        with a consumer of its own. Records past a partition's ``until`` are left out
        (the watcher's subscription has them)."""
        spans = {
            p: (start, end)
            for p, (start, end) in enumerate(zip(positions, until, strict=False))
            if start < end
        }
        if not spans:
            return
        async with self._replays:
            consumer = every_partition_consumer(self._settings, "ocitag-api-state-replay")
            await start_whole(consumer.start, consumer.stop)
            try:
                async for batch in _read_spans(consumer, self._topic, spans):
                    yield batch
            finally:
                await stop_consumer(consumer, "state replay", grouped=False)

    async def stop(self) -> None:
        self._stopping = True
        self.fanout.close_all("shutdown")
        await stop_consumer(self._consumer, "state feed", grouped=False)


async def _read_spans(
    consumer: AIOKafkaConsumer, topic: str, spans: dict[int, tuple[int, int]]
) -> AsyncIterator[list[Change]]:
    tps = {p: TopicPartition(topic, p) for p in spans}
    consumer.assign(list(tps.values()))
    for p, (start, _) in spans.items():
        consumer.seek(tps[p], start)
    open_spans = dict(spans)
    while open_spans:
        batches: dict[Any, Any] = await consumer.getmany(
            *[tps[p] for p in open_spans], timeout_ms=500, max_records=5_000
        )
        out: list[Change] = []
        for tp, records in batches.items():
            end = spans[tp.partition][1]
            out.extend(
                Change(
                    r.partition,
                    r.offset,
                    _key(r.key),
                    _key(r.key).rpartition(":")[0],
                    r.value,
                    version_of(r.headers),
                    (),
                )
                for r in records
                if r.offset < end
            )
        if out:
            yield out
        for p in list(open_spans):
            if await consumer.position(tps[p]) >= spans[p][1]:
                del open_spans[p]
