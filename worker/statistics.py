"""Planner statistics for the tables the store grows: analysed early, by the worker.

Without statistics PostgreSQL guesses that a column has 200 distinct values, so a lookup
of 8 keys seems to select 4 % of the idempotency record and a sequential scan looks
cheaper than its index, however large the partition grows. A fresh store, and every new
partition of the record, has no statistics until autovacuum first analyses it (after
about 10 % of the rows changed, at most once a minute per database): on a new database
at 2,000 events/s that came after the 60 s run, with every batch reading the whole
record (p99 12.9 s). Planning each statement for its parameters (worker/db.py) is not
enough on its own: measured, 322 of 400 batches still scanned the record.

One analysis fixes it for good: the keys are unique, which PostgreSQL stores as a
fraction of the rows and scales with the table's current size at each plan. So the
store analyses the current partition and the tag table as its own inserts into that
partition cross each rung of a short ladder (1,000, 10,000 and 100,000 records), and
leaves the rest to autovacuum. Each analysis samples at most 30,000 rows (tens of
milliseconds) and runs beside the batches, one at a time, never inside one. A restarted
worker climbs the ladder again: at most three extra analyses per partition.

PostgreSQL analyses a table only for its owner (or the database's): a worker whose role
does not own them gets a warning instead, logged once per table (``analyse_skipped``),
and its plans depend on autovacuum again. The tag table's lookups match its whole
primary key, which the planner costs as one row a probe even without statistics, so
they keep to the index anyway; the record's lookups do not. The worker's role must own
the record to rotate its partitions in any case (worker/partitions.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import structlog

from worker.partitions import partition_name

log = structlog.get_logger("worker.statistics")

#: records this process has added to one partition at which it analyses the tables
LADDER: tuple[int, ...] = (1_000, 10_000, 100_000)


def rungs_crossed(before: int, after: int, ladder: Sequence[int] = LADDER) -> bool:
    """Whether going from ``before`` to ``after`` records crosses a rung of the ladder."""
    return any(before < rung <= after for rung in ladder)


async def analyse_table(pool: asyncpg.Pool, table: str) -> str | None:
    """ANALYZE one table on a connection of the pool (not a batch's). Returns the
    server's warning when it skipped the table instead: PostgreSQL analyses only for the
    table's or the database's owner, and otherwise warns rather than fails. Waits at
    most a second for the table's analysis lock (``LockNotAvailableError`` then): one
    held by another session that analyses it, or by an anti-wraparound vacuum, which
    PostgreSQL does not cancel for a waiting ANALYZE."""
    warnings: list[str] = []

    def heard(_: object, message: asyncpg.PostgresLogMessage) -> None:
        if message.severity in ("WARNING", "ERROR"):
            warnings.append(str(message.message))

    async with pool.acquire() as conn:
        conn.add_log_listener(heard)
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '1s'")
                await conn.execute(f"ANALYZE {table}")
            await asyncio.sleep(0)  # the listener is called soon after, not during
        finally:
            conn.remove_log_listener(heard)
    return warnings[0] if warnings else None


class Statistics:
    """Counts the records added per partition and analyses when a rung is crossed
    (``analyse``: ``analyse_table`` on the store's pool; a fake in unit tests)."""

    def __init__(self, analyse: Callable[[str], Awaitable[str | None]]) -> None:
        self._analyse_table = analyse
        self._epoch: int | None = None
        self._recorded = 0
        self._task: asyncio.Task[None] | None = None
        self._pending: int | None = None  # an epoch whose analysis waits for the running one
        self.analyses = 0
        #: tables PostgreSQL would not analyse for this role (warned once each)
        self.skipped: set[str] = set()

    def recorded(self, epoch: int, count: int) -> None:
        """``count`` records were committed to ``epoch``'s partition."""
        if self._epoch is not None and epoch < self._epoch:
            return  # a batch that began before a rotation: its partition is closed now
        if epoch != self._epoch:  # a rotation: the new partition has no statistics
            self._epoch, self._recorded = epoch, 0
        before, self._recorded = self._recorded, self._recorded + count
        if rungs_crossed(before, self._recorded):
            self._start(epoch)

    def _start(self, epoch: int) -> None:
        if self._task is not None and not self._task.done():
            self._pending = epoch
            return
        self._task = asyncio.create_task(self._analyse(epoch), name="analyse")

    async def _analyse(self, epoch: int) -> None:
        while True:
            for table in (partition_name(epoch), "ocitags"):
                await self._one(table)
            if self._pending is None:
                return
            epoch, self._pending = self._pending, None

    async def _one(self, table: str) -> None:
        try:
            warning = await self._analyse_table(table)
        except asyncpg.LockNotAvailableError:
            # another session analyses or vacuums it: that does the same job
            log.info("analyse_deferred", table=table, reason="its analysis lock is held")
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # statistics only speed the plans up: never stop for them
            log.warning("analyse_failed", table=table, error=f"{type(exc).__name__}: {exc}")
            return
        if warning is None:
            self.analyses += 1
            log.info("table_analysed", table=table, records=self._recorded)
        elif table not in self.skipped:
            self.skipped.add(table)
            log.warning(
                "analyse_skipped",
                table=table,
                error=warning,
                consequence="its plans wait for autovacuum's first analysis",
                fix="let the worker's role own the tables (docs/scaling.md, Plans)",
            )

    async def settled(self) -> None:
        """Wait until no analysis is running or queued."""
        while self._task is not None and not self._task.done():
            await asyncio.gather(self._task, return_exceptions=True)

    async def close(self) -> None:
        """Stop an analysis in progress: shutdown must not wait for statistics."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
