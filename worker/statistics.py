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

The worker owns the record's partitions (it creates them). A role that does not own
``ocitags`` gets a warning from PostgreSQL instead of its analysis; the tag table's
lookups match its whole primary key, which the planner costs as one row a probe without
statistics, so they keep to the index once the table spans a few dozen pages anyway.
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


async def analyse_tables(pool: asyncpg.Pool, tables: Sequence[str]) -> None:
    """ANALYZE the tables, on a connection of the pool (not a batch's)."""
    async with pool.acquire() as conn:
        await conn.execute(f"ANALYZE {', '.join(tables)}")


class Statistics:
    """Counts the records added per partition and analyses when a rung is crossed
    (``analyse``: ``analyse_tables`` on the store's pool; a fake in unit tests)."""

    def __init__(self, analyse: Callable[[Sequence[str]], Awaitable[None]]) -> None:
        self._analyse_tables = analyse
        self._epoch: int | None = None
        self._recorded = 0
        self._task: asyncio.Task[None] | None = None
        self._pending: int | None = None  # an epoch whose analysis waits for the running one
        self.analyses = 0

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
            tables = [partition_name(epoch), "ocitags"]
            try:
                await self._analyse_tables(tables)
                self.analyses += 1
                log.info("tables_analysed", tables=tables, records=self._recorded)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                # statistics only speed the plans up: autovacuum still comes by
                log.warning("analyse_failed", tables=tables, error=f"{type(exc).__name__}: {exc}")
            if self._pending is None:
                return
            epoch, self._pending = self._pending, None

    async def close(self) -> None:
        """Wait for an analysis in progress (a pool closing under it would wait anyway)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
