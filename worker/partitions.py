"""The idempotency record's partitions (migration 0004): expiry drops a whole partition.

``processed_events`` is partitioned by ``epoch``; ``processed_current`` names the epoch
new records go to and ``processed_partitions`` when each began and ended. ``maintain``
(every ``prune_interval_seconds``, from any replica: one at a time by an advisory lock):

- keeps the next partition ready (created apart, then attached: attaching takes a lock
  that does not stop the appliers, creating one in place would);
- rotates to it when the current one is ``partition_seconds`` old: the update of
  ``processed_current`` waits for the appliers that read the old epoch (FOR SHARE) to
  commit, so that no event is recorded in two epochs by two appliers at once;
- drops the partitions that ended more than the retention ago: detached concurrently
  (the appliers go on), then dropped. A record lives between the retention and the
  retention plus one partition period.

History (migration 0005) shares the epochs: every epoch has a partition of
``ocitag_history`` too, created, attached and rotated with the record's, and
``ocitag_history_partitions`` keeps when each ended (after the record's own partition is
gone). With a history retention (``history_retention_seconds`` > 0) the history
partitions that ended more than that ago are dropped; with 0 never. A live tag whose
newest entry is in a partition about to go would vanish from the three questions with
it: first, in one transaction, each such tag gets a ``baseline`` entry in the current
partition (the record as it is, its creation kept in ``ocitag_history_baselines`` as
migration 0005 keeps it) and the old partitions are emptied (TRUNCATE: readers see the
old entries or the baselines, never neither nor both); the emptied partitions are then
detached concurrently and dropped (the appliers go on meanwhile: they write the current
partition only, and TRUNCATE locks only the partitions it empties).

Compared with deleting expired rows (the record before 0004): no dead rows, so nothing
for vacuum to clean and no bloat in the live partitions (bench/store.py, "retention").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

import asyncpg
import structlog

from worker.db import Connection

log = structlog.get_logger("worker.partitions")

_LOCK_KEY = 0x0C17A7  # pg_try_advisory_lock key: one maintainer at a time
#: how long emptying expired history partitions waits for their readers (docs/history.md)
TRUNCATE_LOCK_TIMEOUT_MS = 2_000

_CURRENT = """
SELECT p.epoch, p.started_at, now() - p.started_at AS age
FROM processed_current c JOIN processed_partitions p USING (epoch)
"""

_EXPIRED = """
SELECT p.epoch, coalesce(c.reltuples, 0)::bigint AS rows
FROM processed_partitions p
LEFT JOIN pg_class c ON c.oid = to_regclass('processed_events_e' || p.epoch)
WHERE p.ended_at < now() - $1::interval
ORDER BY p.epoch
"""


_HISTORY_EXPIRED = """
SELECT p.epoch, coalesce(c.reltuples, 0)::bigint AS rows
FROM ocitag_history_partitions p
LEFT JOIN pg_class c ON c.oid = to_regclass('ocitag_history_e' || p.epoch)
WHERE p.ended_at < now() - $1::interval
ORDER BY p.epoch
"""

# The live tags whose newest entry (the one of the record's version and time) is in the
# partitions about to go: their baselines are that entry as the
# start of history, in the current partition, with the record's creation. The record is
# found by its OCITag ID, split at its last ':' (worker/identifiers.py).
_BASELINE_ROWS = """
CREATE TEMPORARY TABLE history_rebaseline ON COMMIT DROP AS
SELECT n.tag_ref, n.version, n.at, n.by_ref, n.source_ref, n.artifact, n.event_id,
       t.created_by, t.created_on
FROM (SELECT DISTINCT ON (tag_ref) * FROM ocitag_history WHERE epoch = ANY($1::integer[])
      ORDER BY tag_ref, version DESC) n
JOIN ocitag_history_names nm ON nm.ref = n.tag_ref
JOIN ocitags t ON t.repository = left(nm.name, length(nm.name) - strpos(reverse(nm.name), ':'))
              AND t.tag = right(nm.name, strpos(reverse(nm.name), ':') - 1)
WHERE (n.change & 7) <> 4 AND t.deleted_on IS NULL AND t.version = n.version
  AND t.last_modified_on = n.at
"""

# the creations of the baselines that go (a baseline's creation lives beside it)
_FORGET_BASELINES = """
DELETE FROM ocitag_history_baselines b USING ocitag_history h
WHERE h.epoch = ANY($1::integer[]) AND (h.change & 7) = 0
  AND b.tag_ref = h.tag_ref AND b.version = h.version
"""

_REBASELINE = (
    """
    INSERT INTO ocitag_history_baselines (tag_ref, version, created_by, created_on)
    SELECT tag_ref, version, created_by, created_on FROM history_rebaseline
    ON CONFLICT (tag_ref, version) DO UPDATE
        SET created_by = excluded.created_by, created_on = excluded.created_on
    """,
    """
    INSERT INTO ocitag_history (at, recorded_at, tag_ref, by_ref, source_ref, version, epoch,
                                change, artifact, event_id)
    SELECT at, now(), tag_ref, by_ref, source_ref, version,
           (SELECT epoch FROM processed_current), 0, artifact, event_id
    FROM history_rebaseline
    """,
)

#: the partitioned tables of an epoch: (parent, partition name prefix)
_TABLES = (("processed_events", "processed_events_e"), ("ocitag_history", "ocitag_history_e"))


@dataclass(frozen=True, slots=True)
class Maintenance:
    rotated_to: int | None = None
    dropped: tuple[int, ...] = ()
    #: records in the dropped partitions (PostgreSQL's estimate, from its statistics)
    dropped_records: int = 0
    skipped: bool = False  # another replica was maintaining
    #: history partitions dropped (past OCITAG_HISTORY_RETENTION_SECONDS) and their entries
    history_dropped: tuple[int, ...] = ()
    history_dropped_entries: int = 0
    #: live tags whose newest entry went with them, given a baseline entry first
    history_baselines: int = 0


def partition_name(epoch: int, prefix: str = "processed_events_e") -> str:
    return f"{prefix}{int(epoch)}"


async def maintain(
    pool: asyncpg.Pool,
    *,
    retention_seconds: float,
    partition_seconds: float,
    history_retention_seconds: float = 0,
) -> Maintenance:
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
            return Maintenance(skipped=True)
        try:
            done = await _maintain(conn, retention_seconds, partition_seconds)
            if history_retention_seconds <= 0:
                return done
            dropped, baselines = await _drop_history(conn, history_retention_seconds)
            return replace(
                done,
                history_dropped=tuple(e for e, _ in dropped),
                history_dropped_entries=sum(n for _, n in dropped),
                history_baselines=baselines,
            )
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def _drop_history(
    conn: Connection, retention_seconds: float
) -> tuple[list[tuple[int, int]], int]:
    """The history partitions that ended more than the retention ago, dropped after the
    live tags whose newest entry is there got a baseline; and how many did."""
    expired = await conn.fetch(_HISTORY_EXPIRED, timedelta(seconds=retention_seconds))
    if not expired:
        return [], 0
    epochs = [row["epoch"] for row in expired]
    try:
        baselines = await rebaseline(conn, epochs)
    except asyncpg.LockNotAvailableError:
        log.warning("history_drop_deferred", epochs=epochs, reason="history readers held the lock")
        return [], 0
    for row in expired:
        await drop_partition(conn, row["epoch"], table="ocitag_history")
        await conn.execute("DELETE FROM ocitag_history_partitions WHERE epoch = $1", row["epoch"])
    return [(row["epoch"], max(0, row["rows"])) for row in expired], baselines


async def rebaseline(conn: Connection, epochs: list[int]) -> int:
    """In one transaction: a baseline entry in the current partition for every live tag
    whose newest entry is in the history partitions of ``epochs``, and those partitions
    emptied. Done again after a failure in between, it finds them empty: nothing twice.
    Never the current epoch (its baselines would go with it)."""
    if await conn.fetchval("SELECT epoch FROM processed_current") in epochs:
        raise ValueError("the current history partition is never rebaselined nor emptied")
    present = [
        e
        for e in epochs
        if await conn.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", partition_name(e, "ocitag_history_e")
        )
    ]
    if not present:
        return 0
    async with conn.transaction():
        status = await conn.execute(_BASELINE_ROWS, present)
        await conn.execute(_FORGET_BASELINES, present)
        for statement in _REBASELINE:
            await conn.execute(statement)
        # TRUNCATE waits for the readers of those partitions and, waiting, holds up new
        # ones: not longer than this; then the drop is left for the next maintenance
        await conn.execute(f"SET LOCAL lock_timeout = '{TRUNCATE_LOCK_TIMEOUT_MS}ms'")
        await conn.execute(
            "TRUNCATE " + ", ".join(partition_name(e, "ocitag_history_e") for e in present)
        )
    return int(status.split()[-1])


async def _maintain(
    conn: Connection, retention_seconds: float, partition_seconds: float
) -> Maintenance:
    current = await conn.fetchrow(_CURRENT)
    if current is None:
        raise RuntimeError("processed_current names no partition: is migration 0004 applied?")
    epoch: int = current["epoch"]
    await ensure_partition(conn, epoch + 1)
    rotated_to = None
    if current["age"] >= timedelta(seconds=partition_seconds):
        await rotate(conn, epoch)
        rotated_to = epoch + 1
        await ensure_partition(conn, epoch + 2)
    expired = await conn.fetch(_EXPIRED, timedelta(seconds=retention_seconds))
    dropped = []
    for row in expired:
        await drop_partition(conn, row["epoch"])
        dropped.append(row["epoch"])
    return Maintenance(
        rotated_to, tuple(dropped), sum(max(0, r["rows"]) for r in expired), skipped=False
    )


async def ensure_partition(conn: Connection, epoch: int) -> None:
    """The partitions of ``epoch`` (the record's and history's), created and attached
    unless they are there."""
    for table, prefix in _TABLES:
        name = partition_name(epoch, prefix)
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
            continue
        async with conn.transaction():
            await conn.execute(
                f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS "
                "INCLUDING CONSTRAINTS INCLUDING INDEXES)"
            )
            await conn.execute(
                f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES IN ({int(epoch)})"
            )


async def rotate(conn: Connection, epoch: int) -> None:
    """From ``epoch`` to the next one (whose partition must exist)."""
    async with conn.transaction():
        # waits for every applier holding the current epoch FOR SHARE
        moved = await conn.execute(
            "UPDATE processed_current SET epoch = $1 WHERE epoch = $2", epoch + 1, epoch
        )
        if moved.split()[-1] != "1":
            return  # rotated meanwhile
        await conn.execute(
            "UPDATE processed_partitions SET ended_at = now() WHERE epoch = $1", epoch
        )
        await conn.execute(
            "INSERT INTO processed_partitions (epoch, started_at) VALUES ($1, now())", epoch + 1
        )
        await conn.execute(
            "UPDATE ocitag_history_partitions SET ended_at = now() WHERE epoch = $1", epoch
        )
        await conn.execute(
            "INSERT INTO ocitag_history_partitions (epoch, started_at) VALUES ($1, now())",
            epoch + 1,
        )


async def drop_partition(conn: Connection, epoch: int, *, table: str = "processed_events") -> None:
    """Detach (concurrently: the appliers are not stopped) and drop one partition."""
    name = partition_name(epoch, f"{table}_e")
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
        attached = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1))", name
        )
        if attached:
            pending = await conn.fetchval(
                "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass($1)",
                name,
            )
            how = "FINALIZE" if pending else "CONCURRENTLY"
            await conn.execute(f"ALTER TABLE {table} DETACH PARTITION {name} {how}")
        await conn.execute(f"DROP TABLE {name}")
    if table == "processed_events":
        await conn.execute("DELETE FROM processed_partitions WHERE epoch = $1", epoch)
