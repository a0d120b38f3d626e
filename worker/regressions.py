"""A tag's stored version going backwards, seen at apply time (docs/replicated.md).

After a failover to an asynchronous standby the store can lack the last transactions the
worker acknowledged: the next batch of such a tag reads a row older than the one this
worker wrote, or none. The worker remembers, per tag, the version and event time it last
wrote and when it wrote it (``VersionMemory``, bounded); when a batch
reads a row that cannot be explained without a loss (``regressed``, pure), it says so
once per tag and read: one ``store_regressed`` error line and
``ocitag_store_regressions_total``.

A tag's version only goes back when its row is deleted, and only tombstones are deleted,
by pruning, once recorded longer ago than the tombstone retention. So:

- **A write younger than the retention** (less a margin, below): any lower version, or
  no row, is a loss. Whatever deleted the row after this write was a tombstone written
  after it, too young to be pruned. This covers a tag created and deleted in what a
  failover lost and then created again (version 1 reused), and a lost version whose
  event time equals the one kept (ties are broken by the event's source and id).
- **An older write:** a successor's tombstone may have been pruned since. That write
  is lost only if the row has a lower version **and** an older event time. A tag
  created again after pruning starts at version 1 with a later event time (only a move
  older than the pruned deletion brings it back with an older time: README,
  "Deletions"; that is reported, rightly, as the tag going back in time). No row then
  says nothing.

Another worker that wrote the tag since (a rebalance) leaves a higher version, never a
lower one. Pruning compares a row's ``recorded_at`` with the database's clock, and
``recorded_at`` is the writing batch's ``processed_at``: the writer's clock, read before
its transaction. So "younger" leaves a margin for the database's clock against the
writers' and for a writer's time to apply: half the retention, at most an hour
(``unprunable_since``). "Now" is read when the batch is checked, not taken from its
``processed_at`` (the store's conflict retries and the one-at-a-time fallback reuse it).
The rule assumes every process writing to the database prunes with the same retention:
one pruning with a shorter one (a rolling update lowering it, two deployments sharing a
database) takes tombstones the others still count as unprunable, and they page falsely.

Hand-written rather than a cache library: a plain dict in insertion order is the LRU
(a tag written again is moved to the end; past the capacity the oldest is dropped), keyed
by the tag's hash (64 bits: two of 200,000 tags collide with a chance of about 1e-9,
and a collision could only hide or invent a regression of those two), with (version,
event time, when written) as the value (a batch's rows share one "when written"):
about 220 bytes a tag (tracemalloc, tests/unit/test_regressions.py; as much as before
"when written" was kept), so the default capacity of 200,000 tags costs about 44 MB; a
batch costs one dict look-up per tag it reads and one move per tag it writes (about 3 µs
a tag on the shared test machine: 1.6 ms for a 500-tag batch, against the
tens of milliseconds of its transaction).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.decision import TagRecord

#: tags remembered (the most recently written); see the module docstring for the cost
CAPACITY = 200_000

TagKey = tuple[str, str]
#: (version, event time, when this worker wrote it: both in microseconds since the epoch)
Remembered = tuple[int, int, int]

#: the most the margin grows to: the database's clock against the writers' (and their time
#: to apply), however long the retention
SKEW_MARGIN = timedelta(hours=1)


def _micros(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000 + at.microsecond


def remembered(row: TagRecord, written_at: datetime) -> Remembered:
    return _entry(row, _micros(written_at))


def _entry(row: TagRecord, written: int) -> Remembered:
    return (row.version, _micros(row.last_modified_on), written)


def unprunable_since(now: datetime, tombstone_retention: timedelta) -> int:
    """Rows recorded after this (microseconds since the epoch) cannot have been pruned
    by ``now``: the retention less the clocks' margin (half the retention, at most
    ``SKEW_MARGIN``) before it. Pure."""
    margin = min(tombstone_retention / 2, SKEW_MARGIN)
    return _micros(now - tombstone_retention + margin)


def regressed(mine: Remembered | None, read: TagRecord | None, unprunable_after: int) -> bool:
    """The row read (None: none) cannot follow from the one this worker wrote without a
    loss: for a write after ``unprunable_after`` (``unprunable_since``), no row or a
    lower version; for an older one, a lower version and an older event time. No memory
    is no regression. Pure."""
    if mine is None:
        return False
    version, micros, written = mine
    if written > unprunable_after:
        return read is None or read.version < version
    return read is not None and read.version < version and _micros(read.last_modified_on) < micros


@dataclass(frozen=True, slots=True)
class Regression:
    ocitag_id: str
    written_version: int
    stored_version: int | None  # None: no row


class VersionMemory:
    """The version and event time this worker last wrote per tag, and when it wrote it,
    the most recent ``capacity`` tags.

    Batches of several partitions run at once and share it: a batch that read a tag
    before another batch of this process committed a newer row of it must not take that
    newer row for what it should have read. Each entry keeps the sequence number of the
    ``remember`` that wrote it; ``check`` is given the number read (``mark``) before the
    batch's transaction began and skips what was remembered since."""

    def __init__(self, tombstone_retention: timedelta, capacity: int = CAPACITY) -> None:
        self._tombstone_retention = tombstone_retention
        self._capacity = capacity
        self._tags: dict[int, tuple[Remembered, int]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._tags)

    def mark(self) -> int:
        """The sequence number before a batch's transaction: pass it to ``check``."""
        return self._seq

    def check(
        self, read: Mapping[TagKey, TagRecord | None], now: datetime, since: int | None = None
    ) -> list[Regression]:
        """The tags whose row, as a batch read it at ``now`` (None: none), is older than
        what was written before ``since`` (``mark``; None: everything remembered)."""
        unprunable_after = unprunable_since(now, self._tombstone_retention)
        found = []
        for tag, row in read.items():
            entry = self._tags.get(hash(tag))
            if entry is None or (since is not None and entry[1] >= since):
                continue
            mine = entry[0]
            if regressed(mine, row, unprunable_after):
                stored = row.version if row is not None else None
                found.append(Regression(f"{tag[0]}:{tag[1]}", mine[0], stored))
        return found

    def remember(self, rows: Iterable[TagRecord], written_at: datetime) -> None:
        """What a committed batch wrote at ``written_at`` (the time it recorded):
        each tag moves to the most recent end."""
        tags = self._tags
        seq = self._seq
        written = _micros(written_at)  # one object for the batch's rows
        for row in rows:
            key = hash((row.repository, row.tag))
            tags.pop(key, None)
            tags[key] = (_entry(row, written), seq)
        self._seq = seq + 1
        while len(tags) > self._capacity:
            del tags[next(iter(tags))]
