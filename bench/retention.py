"""Retention of the idempotency record (``make bench-retention``): deleting expired rows
in batches (the record of migration 0001, ``DELETE … LIMIT``-style batches of 5,000 as
the worker did) against dropping the partition that holds them (migration 0004,
worker/partitions.py), on the same number of records.

Per approach: the time to expire half of the records, the WAL it wrote, the dead rows
it left, the time and WAL of the VACUUM that cleans up after it (none is needed after a
drop), and the size of the table with its indexes before and after. Rows are made with
``generate_series`` in the shape each schema stores (0001: text source and id, 32-byte
fingerprint, ~700-byte outcome; 0004: 16-byte key and fingerprint, what rebuilds the
outcome), the expired half first as time would have it.

Knobs: BENCH_RETENTION_ROWS (400000), BENCH_RESULTS.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.report import table
from bench.services import (
    RESULTS,
    Services,
    code_version,
    create_database,
    discover,
    drop_databases,
    env_int,
    machine,
    unique,
    with_database,
    write_results,
)
from worker import partitions
from worker.db import Connection
from worker.migrate import available

# the worker's batched delete before migration 0004
_OLD_PRUNE = """
DELETE FROM processed_events
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM processed_events WHERE processed_at < now() - $1::interval LIMIT $2
))
"""

_OLD_ROWS = """
INSERT INTO processed_events (source, id, fingerprint, processed_at, status, outcome_key,
                              outcome)
SELECT 'https://ghcr.io/webhook', 'bench-' || md5(g::text), sha256(g::text::bytea),
       now() - CASE WHEN g <= $1 / 2 THEN interval '8 days' ELSE interval '1 hour' END,
       200, convert_to('ghcr.io/team' || g % 53 || '/app' || g || ':v' || g, 'UTF8'),
       convert_to(repeat(md5(g::text), 22), 'UTF8')
FROM generate_series(1, $1) g
"""

_NEW_ROWS = """
INSERT INTO processed_events (key, epoch, fingerprint, processed_at, status, change, version,
                              created_on, created_by, source_ref)
SELECT substring(sha256(('k' || g)::bytea) FROM 1 FOR 16),
       CASE WHEN g <= $1 / 2 THEN 1 ELSE 2 END,
       substring(sha256(g::text::bytea) FROM 1 FOR 16),
       now() - CASE WHEN g <= $1 / 2 THEN interval '8 days' ELSE interval '1 hour' END,
       200, 2, g % 7 + 1, now() - interval '9 days', 'ci-bot', 1
FROM generate_series(1, $1) g
"""

_SIZE = """
SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree($1)),
                pg_total_relation_size($1))::bigint
"""
_DEAD = """
SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables
WHERE relname LIKE 'processed_events%'
"""


async def _wal(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


async def _dead(conn: Connection) -> int:
    # a session reports its statistics with a delay: make it report now
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT 1")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(await conn.fetchval(_DEAD))


async def old_schema(services: Services, name: str, rows: int) -> dict[str, Any]:
    admin = await asyncpg.connect(with_database(services.database_url, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(services.database_url, name))
    try:
        await conn.execute(available()[0].sql)
        await conn.execute(_OLD_ROWS, rows)
        await conn.execute("VACUUM ANALYZE processed_events")
        before = await conn.fetchval(_SIZE, "processed_events")
        wal, started, expired = await _wal(conn), time.perf_counter(), 0
        while True:
            status = await conn.execute(_OLD_PRUNE, timedelta(days=7), 5_000)
            expired += int(status.split()[-1])
            if int(status.split()[-1]) < 5_000:
                break
        expire_s, expire_wal = time.perf_counter() - started, await _wal(conn) - wal
        dead = await _dead(conn)
        wal, started = await _wal(conn), time.perf_counter()
        await conn.execute("VACUUM processed_events")
        vacuum_s, vacuum_wal = time.perf_counter() - started, await _wal(conn) - wal
        after = await conn.fetchval(_SIZE, "processed_events")
    finally:
        await conn.close()
    return Measured(
        "0001: batched DELETE, then VACUUM", rows, expired, before, after, expire_s,
        expire_wal, dead, vacuum_s, vacuum_wal,
    ).result()  # fmt: skip


async def new_schema(services: Services, name: str, rows: int) -> dict[str, Any]:
    url = await create_database(services.database_url, name)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO outcome_sources (id, source) VALUES (1, 'urn:bench')")
        await conn.execute(_NEW_ROWS, rows)
        await conn.execute("VACUUM ANALYZE processed_events")
        # epoch 1 ended 8 days ago, epoch 2 is the current one
        await conn.execute("UPDATE processed_current SET epoch = 2")
        await conn.execute(
            "UPDATE processed_partitions SET started_at = now() - interval '9 days', "
            "ended_at = now() - interval '8 days' WHERE epoch = 1"
        )
        await conn.execute("INSERT INTO processed_partitions VALUES (2, now(), NULL)")
        expired = await conn.fetchval("SELECT count(*) FROM processed_events_e1")
        before = await conn.fetchval(_SIZE, "processed_events")
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as pooled:
            wal = await _wal(pooled)
        started = time.perf_counter()
        done = await partitions.maintain(pool, retention_seconds=7 * 86_400,
                                         partition_seconds=86_400)  # fmt: skip
        expire_s = time.perf_counter() - started
        assert done.dropped == (1,), done
        async with pool.acquire() as pooled:
            expire_wal = await _wal(pooled) - wal
            dead = await _dead(pooled)
            after = await pooled.fetchval(_SIZE, "processed_events")
    finally:
        await pool.close()
    return Measured(
        "0004: drop the expired partition", rows, expired, before, after, expire_s,
        expire_wal, dead,
    ).result()  # fmt: skip


@dataclass(frozen=True)
class Measured:
    label: str
    rows: int
    expired: int
    before: int
    after: int
    expire_s: float
    expire_wal: int
    dead: int
    vacuum_s: float | None = None
    vacuum_wal: int | None = None

    def result(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "rows": self.rows,
            "expired": self.expired,
            "expire_seconds": round(self.expire_s, 3),
            "expire_wal_mib": round(self.expire_wal / 2**20, 1),
            "dead_rows_after": self.dead,
            "vacuum_seconds": None if self.vacuum_s is None else round(self.vacuum_s, 3),
            "vacuum_wal_mib": None
            if self.vacuum_wal is None
            else round(self.vacuum_wal / 2**20, 1),
            "size_before_mib": round(self.before / 2**20, 1),
            "size_after_mib": round(self.after / 2**20, 1),
            "bytes_per_record_before": round(self.before / self.rows),
        }


async def run(services: Services, rows: int) -> dict[str, Any]:
    old, new = unique("retold"), unique("retnew")
    try:
        results = [await old_schema(services, old, rows), await new_schema(services, new, rows)]
    finally:
        await drop_databases(services.database_url, [old, new])
    return {"benchmark": "retention", "machine": machine(), "code": code_version(),
            "runs": results}  # fmt: skip


def render(results: dict[str, Any]) -> str:
    headers = [
        "approach", "records", "expired", "expire s", "expire WAL MiB", "dead rows after",
        "VACUUM s", "VACUUM WAL MiB", "MiB before", "MiB after", "B/record",
    ]  # fmt: skip
    keys = [
        "label", "rows", "expired", "expire_seconds", "expire_wal_mib", "dead_rows_after",
        "vacuum_seconds", "vacuum_wal_mib", "size_before_mib", "size_after_mib",
        "bytes_per_record_before",
    ]  # fmt: skip
    return table(headers, [[r[k] for k in keys] for r in results["runs"]])


def main() -> None:
    rows = env_int("BENCH_RETENTION_ROWS", 400_000)
    results = asyncio.run(run(discover(), rows))
    path = write_results("retention", results, Path(os.environ.get("BENCH_RESULTS", RESULTS)))
    print(render(results))
    print(f"\nresults: {path} (and retention-latest.json)")


if __name__ == "__main__":
    main()
