"""The watch's decisions (docs/subscribers.md "Watch"). Pure: no I/O, no clock.

- ``Change``: one state-topic record as the feed passes it on, framed once for all.
- ``start``: how a watch begins from its ``Last-Event-ID`` and the topic's offsets —
  a snapshot, a replay from the id's positions, or ``reset`` then a snapshot.
- ``Cursor``: one watcher's position in the topic and what it already sent: which
  records it passes on (in scope, readable, newer than what the client holds) and where
  the topic lost records it should have replayed (``Gap``: compaction or retention
  removed them; the watch resets).
- ``Outbox``: the bounded queue between the feed and one watcher; a watcher that falls
  ``limit`` records behind is cut off rather than buffered without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import orjson

from worker.api import resume, sse


def _allow_all(_: str) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Change:
    """A state-topic record. ``after``: the feed's positions once it is read; ``stale``:
    a version the feed already passed on for this tag (an at-least-once repeat); ``frame``:
    the SSE event with the feed's id, shared by every watcher standing where the feed
    stands."""

    partition: int
    offset: int
    key: str
    repository: str
    value: bytes | None
    version: int | None
    after: tuple[int, ...]
    stale: bool = False
    frame: bytes = b""

    @property
    def name(self) -> str:
        return "upsert" if self.value is not None else "delete"

    def data(self) -> bytes:
        if self.value is not None:
            return self.value
        return orjson.dumps({"tag": self.key, "version": self.version})

    def framed(self, event_id: str) -> bytes:
        return sse.event(self.name, self.data(), event_id)


def change(
    partition: int,
    offset: int,
    key: str,
    *,
    value: bytes | None,
    version: int | None,
    after: tuple[int, ...],
    ids: resume.EventIds,
    stale: bool = False,
) -> Change:
    """A Change framed with the id of ``after`` (the feed's positions past it)."""
    repository = key.rpartition(":")[0]
    bare = Change(partition, offset, key, repository, value, version, after, stale)
    return Change(
        partition,
        offset,
        key,
        repository,
        value,
        version,
        after,
        stale,
        bare.framed(ids.encode(after)),
    )


@dataclass(frozen=True, slots=True)
class Shared:
    """A feed read as a watcher of everything gets it once live: the frames of its
    records but repeats (``stale``), joined once for every such watcher, in pieces cut at
    event boundaries (a write holds one piece)."""

    pieces: tuple[bytes, ...]
    upserts: int
    deletes: int


class Batch(list[Change]):
    """One read of the feed, the same object offered to every watcher. ``before``: the
    feed's positions before it, when its offsets follow on one another from there (None
    otherwise): a watcher standing there, live, in need of no per-tag check, passes the
    whole read, so it writes ``shared()`` instead of checking record by record (the
    fan-out's cost per watcher is then per read, not per record)."""

    __slots__ = ("_shared", "before", "piece_bytes")

    def __init__(self, changes: Sequence[Change], piece_bytes: int) -> None:
        super().__init__(changes)
        self.before = _contiguous_from(changes)
        self.piece_bytes = piece_bytes
        self._shared: Shared | None = None

    def shared(self) -> Shared:
        if self._shared is None:
            passed = [c for c in self if not c.stale]
            pieces: list[bytes] = []
            frames: list[bytes] = []
            size = 0
            for c in passed:
                frames.append(c.frame)
                size += len(c.frame)
                if size >= self.piece_bytes:
                    pieces.append(b"".join(frames))
                    frames, size = [], 0
            if frames:
                pieces.append(b"".join(frames))
            upserts = sum(1 for c in passed if c.value is not None)
            self._shared = Shared(tuple(pieces), upserts, len(passed) - upserts)
        return self._shared


def _contiguous_from(changes: Sequence[Change]) -> tuple[int, ...] | None:
    """The positions before ``changes`` if each record's offset is the one its partition
    reached so far (the feed read no hole), else None."""
    if not changes or not changes[0].frame:
        return None
    first = changes[0]
    before = list(first.after)
    before[first.partition] = first.offset
    at = list(before)
    for c in changes:
        if c.partition >= len(at) or c.offset != at[c.partition]:
            return None
        at[c.partition] = c.offset + 1
    return tuple(before)


class Gap(Exception):  # noqa: N818 - the topic's state, not a failure of ours
    """Records a watcher must pass on are gone from the topic (compacted or expired)."""

    def __init__(self, partition: int, expected: int, found: int) -> None:
        super().__init__(f"partition {partition}: offset {expected} expected, {found} found")
        self.partition = partition
        self.reason = "compacted" if found > expected else "expired"


class Start(Enum):
    SNAPSHOT = "snapshot"  # no Last-Event-ID
    REPLAY = "replay"  # every change after the id, from the topic
    RESET = "reset"  # the id cannot be resumed: `reset`, then a snapshot


@dataclass(frozen=True, slots=True)
class Plan:
    start: Start
    positions: tuple[int, ...] = ()
    reason: str = ""


def start(
    last_event_id: str | None,
    log_start: Sequence[int],
    log_end: Sequence[int],
    ids: resume.EventIds,
) -> Plan:
    """How a watch begins. ``log_start``/``log_end``: per partition the topic's first
    offset still stored and its end. A partition the id does not name was added after
    it: read from its start."""
    if last_event_id is None:
        return Plan(Start.SNAPSHOT)
    decoded = ids.decode(last_event_id)
    reason = ""
    positions: tuple[int, ...] = ()
    if decoded is None:
        reason = "unknown_id"
    elif decoded.snapshot:
        reason = "snapshot_interrupted"
    elif len(decoded.positions) > len(log_start):
        reason = "partitions_changed"
    else:
        positions = decoded.positions + tuple(log_start[len(decoded.positions) :])
        reason = _unreachable(positions, log_start, log_end)
    return Plan(Start.RESET, reason=reason) if reason else Plan(Start.REPLAY, positions)


def _unreachable(positions: Sequence[int], log_start: Sequence[int], log_end: Sequence[int]) -> str:
    """Why the topic cannot replay from ``positions`` ('' when it can)."""
    for p, at in enumerate(positions):
        if at < log_start[p]:
            return "expired"
        if at > log_end[p]:
            return "topic_recreated"
    return ""


@dataclass
class Cursor:
    """One watcher's place in the topic and what it has sent.

    ``positions``: per partition the next offset it reads. ``sent``: per tag the version
    the client holds, kept while a record of that tag may still come that is not newer
    (the snapshot's and the replay's tags; in the live phase a tag's entry goes once a
    newer record passes, the feed's ``stale`` mark covers repeats from then on, and
    ``settle`` drops the rest once the watch has been live a while)."""

    positions: list[int]
    ids: resume.EventIds
    repository: str | None = None
    may_read: Callable[[str], bool] = _allow_all
    sent: dict[str, int] = field(default_factory=dict)
    live: bool = False
    #: ``may_read`` allows every tag (no grants): no per-tag check is needed
    reads_all: bool = False

    def takes_whole(self, batch: Sequence[Change]) -> bool:
        """Whether this watcher passes every record of ``batch`` but repeats, exactly
        as ``admit`` would one by one: live, every repository, every tag, nothing held
        back from a snapshot, and standing where the batch begins."""
        return (
            self.live
            and self.reads_all
            and self.repository is None
            and not self.sent
            and isinstance(batch, Batch)
            and batch.before is not None
            and tuple(self.positions) == batch.before
        )

    def extend(self, partitions: int) -> None:
        """Partitions added to the topic: read them from their start."""
        self.positions.extend([0] * (partitions - len(self.positions)))

    def in_scope(self, key: str, repository: str) -> bool:
        if self.repository is not None and repository != self.repository:
            return False
        return self.may_read(key)

    def snapshot_row(self, key: str, version: int) -> None:
        self.sent[key] = version

    def admit(self, c: Change) -> bool:
        """Whether to pass ``c`` on; advances the position. Raises Gap when ``c`` is past
        the next offset this watcher must read (records between are gone)."""
        if c.partition >= len(self.positions):
            self.extend(c.partition + 1)
        expected = self.positions[c.partition]
        if c.offset < expected:
            return False  # at or before the resume point: already delivered
        if c.offset > expected:
            raise Gap(c.partition, expected, c.offset)
        self.positions[c.partition] = c.offset + 1
        if (self.live and c.stale) or not self.in_scope(c.key, c.repository):
            return False
        held = self.sent.get(c.key)
        if held is not None and c.version is not None and c.version <= held:
            return False
        if self.live:
            if held is not None:
                del self.sent[c.key]
        elif c.version is not None:
            self.sent[c.key] = c.version
        return True

    def end_of_replay(self, until: Sequence[int]) -> None:
        """A replay read up to ``until``; a partition that ended short lost its last
        records."""
        for p, end in enumerate(until):
            if p < len(self.positions) and self.positions[p] < end:
                raise Gap(p, self.positions[p], end)

    def aligned(self, after: tuple[int, ...]) -> bool:
        """Whether this watcher stands where the feed does (its frames are ours)."""
        return tuple(self.positions) == after

    def event_id(self) -> str:
        return self.ids.encode(tuple(self.positions))

    def settle(self) -> int:
        """Forget the versions kept from the snapshot and the replay; returns how many.

        They guard against a record the worker produced after the watch subscribed for a
        change the snapshot already showed (it commits to PostgreSQL, then produces: one
        batch's send apart). Once every such record has passed, a tag's next record is
        newer, or an at-least-once repeat of the same version. So the watch settles a
        while (``OCITAG_API_WATCH_SETTLE_SECONDS``) after it went live; a record the
        worker produced later still than that is passed on once more (the same version
        again, never an older one: the worker produces one key's batches in order). Cost
        per watcher: ~170 bytes per snapshot tag (its key string and dict slot) until
        then, nothing after."""
        n = len(self.sent)
        self.sent = {}
        return n


class Offer(Enum):
    QUEUED = "queued"
    LEFT = "left"  # a catching-up watcher's queue overflowed: it reads on from the topic
    CUT = "cut"  # a live watcher fell ``limit`` records behind (or the outbox was closed)


class Outbox:
    """The bounded queue between the feed and one watcher. ``offer`` never waits.

    While the watcher catches up (``catching_up``: it sends a snapshot or replays from
    the topic), a batch that would take the queue past ``limit`` empties it and marks it
    ``overflowed`` (``Offer.LEFT``): the feed stops offering, the watcher reads the
    missed records from the topic afterwards (the topic is the buffer, not memory), so a
    big snapshot under load does not cut a healthy watcher off. Once live, such a batch
    closes the outbox with reason ``too_slow`` (``Offer.CUT``: the watcher is cut off;
    the feed and the other watchers go on). A watcher that took everything accepts any
    batch: one read of the feed (at most 5,000 records) may be larger than the limit, and
    a watcher that keeps up is not too slow. So an outbox holds at most ``limit`` + one
    read."""

    def __init__(self, limit: int, *, catching_up: bool = False) -> None:
        self.limit = limit
        self._batches: deque[Sequence[Change]] = deque()
        self.queued = 0
        self.closed: str | None = None
        self.catching_up = catching_up
        self.overflowed = False

    def offer(self, batch: Sequence[Change]) -> Offer:
        """Queue a batch, or say why not (LEFT, CUT: no more offers are wanted)."""
        if self.closed is not None:
            return Offer.CUT
        if self.overflowed:
            return Offer.LEFT
        if self.queued and self.queued + len(batch) > self.limit:
            if self.catching_up:
                self.overflowed = True
                self._clear()
                return Offer.LEFT
            self.close("too_slow")
            return Offer.CUT
        self._batches.append(batch)
        self.queued += len(batch)
        return Offer.QUEUED

    def take(self) -> list[Sequence[Change]]:
        batches = list(self._batches)
        self._clear()
        return batches

    def go_live(self) -> bool:
        """Leave catching up if nothing is queued and nothing was lost (no await between
        the check and the switch: the feed cannot slip a batch in)."""
        if self.queued or self.overflowed or self.closed is not None:
            return False
        self.catching_up = False
        return True

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            self._clear()

    def _clear(self) -> None:
        self._batches.clear()
        self.queued = 0
