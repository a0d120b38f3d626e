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

Compared with deleting expired rows (the record before 0004): no dead rows, so nothing
for vacuum to clean and no bloat in the live partitions (bench/store.py, "retention").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from worker.db import Connection

_LOCK_KEY = 0x0C17A7  # pg_try_advisory_lock key: one maintainer at a time

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


@dataclass(frozen=True, slots=True)
class Maintenance:
    rotated_to: int | None = None
    dropped: tuple[int, ...] = ()
    #: records in the dropped partitions (PostgreSQL's estimate, from its statistics)
    dropped_records: int = 0
    skipped: bool = False  # another replica was maintaining


def partition_name(epoch: int) -> str:
    return f"processed_events_e{int(epoch)}"


async def maintain(
    pool: asyncpg.Pool, *, retention_seconds: float, partition_seconds: float
) -> Maintenance:
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
            return Maintenance(skipped=True)
        try:
            return await _maintain(conn, retention_seconds, partition_seconds)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


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
    """The partition of ``epoch``, created and attached unless it is there."""
    name = partition_name(epoch)
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
        return
    async with conn.transaction():
        await conn.execute(
            f"CREATE TABLE {name} (LIKE processed_events INCLUDING DEFAULTS "
            "INCLUDING CONSTRAINTS INCLUDING INDEXES)"
        )
        await conn.execute(
            f"ALTER TABLE processed_events ATTACH PARTITION {name} FOR VALUES IN ({int(epoch)})"
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


async def drop_partition(conn: Connection, epoch: int) -> None:
    """Detach (concurrently: the appliers are not stopped) and drop one partition."""
    name = partition_name(epoch)
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
            await conn.execute(f"ALTER TABLE processed_events DETACH PARTITION {name} {how}")
        await conn.execute(f"DROP TABLE {name}")
    await conn.execute("DELETE FROM processed_partitions WHERE epoch = $1", epoch)
