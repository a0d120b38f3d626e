"""Fakes behind the watch's Protocols (``Feed``, ``Reads``' snapshot, the writer): the
real ``Fanout`` over records a test appends, a table of live records, a writer that
keeps what was written and can stop reading (as a client that stopped reading does)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime

import orjson

from tests.helpers.sse import Event, parse
from worker.api.feed import Fanout, Subscription
from worker.api.resume import EventIds
from worker.api.store import Stored
from worker.api.watchrules import Change


def stored(repository: str, tag: str, version: int, artifact: str = "a" * 64) -> Stored:
    record = {
        "artifact": artifact,
        "repository": repository,
        "tag": tag,
        "created_by": "t",
        "created_on": "2026-12-06T00:00:00Z",
        "last_modified_by": "t",
        "last_modified_on": "2026-12-06T00:00:00Z",
    }
    return Stored(record, version)


class FakeTopic:
    """A state topic (a list per partition) and its feed. ``compact`` drops records the
    way the log cleaner would (leaving offset gaps)."""

    def __init__(self, partitions: int = 2) -> None:
        self.log: list[list[tuple[int, str, bytes | None, int]]] = [[] for _ in range(partitions)]
        self.ids = EventIds(b"a test key")
        self.fanout = Fanout(partitions, self.ids)
        self.start_offsets = [0] * partitions
        self.replays = 0
        #: a replay yields batches of this many records, waiting ``replay_delay`` before
        #: each and running ``on_replay`` after each (changes arriving meanwhile)
        self.replay_chunk = 1_000_000
        self.replay_delay = 0.0
        self.on_replay: Callable[[], object] | None = None

    def append(self, partition: int, key: str, version: int, *, live: bool = True) -> None:
        """Write a record (not yet read by the feed: ``deliver`` reads)."""
        log = self.log[partition]
        offset = log[-1][0] + 1 if log else 0
        value = orjson.dumps({"tag": key, "version": version}) if live else None
        log.append((offset, key, value, version))

    def deliver(self) -> list[Subscription]:
        """The feed reads every record it has not read, as one batch."""
        batch = [
            self.fanout.read(p, offset, key.encode(), value, version)
            for p, records in enumerate(self.log)
            for offset, key, value, version in records
            if offset >= self.fanout.positions[p]
        ]
        return self.fanout.dispatch(batch) if batch else []

    def compact(self, partition: int, offsets: set[int]) -> None:
        self.log[partition] = [r for r in self.log[partition] if r[0] not in offsets]

    # ---- Feed

    def subscribe(self, limit: int) -> Subscription:
        return self.fanout.subscribe(limit)

    def unsubscribe(self, subscription: Subscription) -> None:
        self.fanout.unsubscribe(subscription)

    async def offsets(self) -> tuple[list[int], list[int]]:
        ends = [
            (log[-1][0] + 1 if log else start)
            for log, start in zip(self.log, self.start_offsets, strict=True)
        ]
        return list(self.start_offsets), ends

    async def replay(
        self, positions: Sequence[int], until: Sequence[int]
    ) -> AsyncGenerator[list[Change], None]:
        self.replays += 1
        batch = [
            Change(p, offset, key, key.rpartition(":")[0], value, version, ())
            for p, records in enumerate(self.log)
            for offset, key, value, version in records
            if positions[p] <= offset < until[p]
        ]
        for at in range(0, len(batch), self.replay_chunk):
            await asyncio.sleep(self.replay_delay)
            yield batch[at : at + self.replay_chunk]
            if self.on_replay is not None:
                self.on_replay()


class FakeReads:
    """``live_ocitags`` as a dict, read in pages like PgReads.snapshot."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Stored] = {}
        self.pages = 0
        #: run as each page is read (changes happening while the snapshot is read)
        self.on_page: Callable[[], object] | None = None
        #: how long each page's read takes
        self.delay = 0.0

    def put(self, repository: str, tag: str, version: int) -> None:
        self.rows[(repository, tag)] = stored(repository, tag, version)

    async def get(self, repository: str, tag: str) -> Stored | None:
        return self.rows.get((repository, tag))

    async def page(self, repository: str, after: str, limit: int) -> list[Stored]:
        return await self.snapshot(repository, (repository, after), limit)

    async def received_at(self, source: str, key: str, now: datetime) -> datetime:
        return now

    async def snapshot(
        self, repository: str | None, after: tuple[str, str], limit: int
    ) -> list[Stored]:
        self.pages += 1
        await asyncio.sleep(self.delay)
        if self.on_page is not None:
            self.on_page()
        keys = sorted(k for k in self.rows if k > after and repository in (None, k[0]))
        return [self.rows[k] for k in keys[:limit]]


class FakeWriter:
    """Keeps what a watch wrote; ``stuck`` makes writes block (a client that stopped
    reading, its TCP window full)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.sizes: list[int] = []  # of each write
        self.stuck = False
        self.written = asyncio.Event()

    async def write(self, data: bytes) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        self.data += data
        self.sizes.append(len(data))
        self.written.set()

    @property
    def events(self) -> list[Event]:
        return parse(self.data.decode())
