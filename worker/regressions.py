"""A tag's stored version going backwards, seen at apply time (docs/replicated.md).

After a failover to an asynchronous standby the store can lack the last transactions the
worker acknowledged: the next batch of such a tag reads a row older than the one this
worker wrote. The worker remembers, per tag, the version and event time it last wrote
and, for a tombstone, when it wrote it (``VersionMemory``, bounded); when a batch reads a
row whose version AND event time are both below what it remembers, or finds no row where
it wrote a record that cannot have been pruned yet (``regressed``, pure), it says so once
per tag and read: one ``store_regressed`` error line and
``ocitag_store_regressions_total``.

Both must be lower: a tombstone pruned after its retention and the tag created again
starts at version 1 with a later event time, which is not a regression (only a move
older than the pruned deletion brings a tag back with an older time: README,
"Deletions"; that is reported, rightly, as the tag going back in time). Another worker
that wrote the tag since (a rebalance) leaves a higher version, never a lower one.

No row: only tombstones are pruned, so a live record's row gone is a loss (a lost
creation, the common case when most events create tags). A tombstone's row gone is one
too while it is younger than the tombstones' retention: a tag created and deleted in
the transactions a failover lost, then created again, would otherwise reuse version 1
unseen. Pruning compares the row's ``recorded_at`` (the worker's clock when it wrote the
tombstone) with the database's clock, so a tombstone counts as unprunable only while it
is younger than the retention less a margin for the two clocks' skew (half the
retention, at most an hour: ``unprunable_since``).

Hand-written rather than a cache library: a plain dict in insertion order is the LRU
(a tag written again is moved to the end; past the capacity the oldest is dropped), keyed
by the tag's hash (64 bits: two of 200,000 tags collide with a chance of about 1e-9,
and a collision could only hide or invent a regression of those two), with (version,
event time in microseconds) as the value: about 180 bytes a tag (tracemalloc,
tests/unit/test_regressions.py), so the default capacity of 200,000 tags costs about
36 MB; a batch costs one dict look-up per tag it reads and one move per tag it writes
(about 3 µs a tag on the shared test machine: 1.6 ms for a 500-tag batch, against the
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
#: (version, event time in microseconds since the epoch, None for a live record or, for a
#: tombstone, when this worker wrote it in microseconds since the epoch)
Remembered = tuple[int, int, int | None]

#: the most the worker's and the database's clocks are taken to differ by
SKEW_MARGIN = timedelta(hours=1)


def _micros(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000 + at.microsecond


def remembered(row: TagRecord, written_at: datetime) -> Remembered:
    return (row.version, _micros(row.last_modified_on), None if row.live else _micros(written_at))


def unprunable_since(now: datetime, tombstone_retention: timedelta) -> int:
    """Tombstones written after this (microseconds since the epoch) cannot have been
    pruned yet: the retention less the clocks' margin (half the retention, at most
    ``SKEW_MARGIN``) before ``now``. Pure."""
    margin = min(tombstone_retention / 2, SKEW_MARGIN)
    return _micros(now - tombstone_retention + margin)


def regressed(mine: Remembered | None, read: TagRecord | None, unprunable_after: int) -> bool:
    """The row read is older than the one this worker wrote: a lower version and an
    older event time; or no row where it wrote a live record, or a tombstone written
    after ``unprunable_after`` (``unprunable_since``: an older one may have been pruned).
    No memory is no regression. Pure."""
    if mine is None:
        return False
    if read is None:
        return mine[2] is None or mine[2] > unprunable_after
    return read.version < mine[0] and _micros(read.last_modified_on) < mine[1]


@dataclass(frozen=True, slots=True)
class Regression:
    ocitag_id: str
    written_version: int
    stored_version: int | None  # None: no row


class VersionMemory:
    """The version and event time this worker last wrote per tag, the most recent
    ``capacity`` tags.

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
        for row in rows:
            key = hash((row.repository, row.tag))
            tags.pop(key, None)
            tags[key] = (remembered(row, written_at), seq)
        self._seq = seq + 1
        while len(tags) > self._capacity:
            del tags[next(iter(tags))]
