"""The store's A/B on its own (``make bench-store-ab``): ``Store.apply`` of small batches,
as a steady rate gives them (BENCH_STORE_AB_BATCH events, 8: 6 new tags and 2 moves of
earlier ones), this checkout's ``worker/store.py`` against the one of another checkout
(BENCH_STORE_BASELINE, required), in one process, each on a fresh migrated database
through the worker's own pool (one connection).

The baseline's ``worker/store.py`` is loaded from its file and runs on this checkout's
other modules, on a database migrated as far as the baseline's migrations go (which must
be this checkout's, unedited): for changes confined to the store and to migrations after
the baseline's (a function replaced by a new migration, as 0010 did). The two alternate in blocks of
BENCH_STORE_AB_BLOCK batches (100; A B, then B A, …) for BENCH_STORE_AB_ROUNDS rounds
(6), so the machine's drift falls on both. Per batch: wall time (p50, p90, p99, mean),
this process's CPU, the statements sent (a query logger; the pool's reset on release
included) and their time as the client sees it, by statement; and PostgreSQL's CPU: the
serving backend's time on a CPU (``/proc/<pid>/schedstat``, nanoseconds, when the server
runs on this host), per batch and inside the lookup and the write (``_one_row``), the
rest being BEGIN, COMMIT and whatever else the batch sent. BENCH_STORE_AB_PARTITIONS
(default 2, a fresh store) rotates each database to that many partitions of the record
(and of the history) first: the lookup reads every partition of the record.

Where the whole pipeline's A/B (``BENCH_FLOOR_BASELINE=… make bench-floor``) drowns in a
shared machine's noise, this one isolates what a change to the store buys per batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg

from bench.report import ratio, table
from bench.services import (
    RESULTS,
    code_version,
    create_database,
    discover,
    env_int,
    machine,
    unique,
    write_results,
)
from worker import partitions
from worker import store as this_store
from worker.db import open_pool
from worker.events import RawRecord, TagMoved
from worker.migrate import available
from worker.outcomes import OutcomeContext
from worker.plan import Item

SYSTEMS = ("before", "after")
CTX = OutcomeContext("urn:ocitag-worker:bench", "https://ocitag-worker.dev/problems/")
START = datetime(2026, 1, 1, tzinfo=UTC)


def baseline_store(checkout: Path) -> ModuleType:
    """The other checkout's ``worker/store.py`` as a module of its own."""
    path = checkout / "worker" / "store.py"
    spec = importlib.util.spec_from_file_location("bench_baseline_store", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"BENCH_STORE_BASELINE: no worker/store.py in {checkout}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def baseline_schema(checkout: Path) -> int:
    """The newest of the other checkout's migrations, which its store's database is
    migrated to: they must be this checkout's up to there, else the A/B would compare
    schemas this checkout cannot build."""
    folder = checkout / "worker" / "migrations"
    theirs = {p.name: p.read_text(encoding="utf-8") for p in folder.glob("[0-9]*_*.sql")}
    ours = {f"{m.version:04d}_{m.name}.sql": m.sql for m in available()}
    differ = sorted(name for name, sql in theirs.items() if ours.get(name) != sql)
    if not theirs or differ:
        raise SystemExit(
            f"BENCH_STORE_BASELINE: migrations of {folder} not this checkout's: "
            f"{differ or 'none found'}"
        )
    return max(int(name[:4]) for name in theirs)


def batch(n: int, label: str, size: int) -> list[Item]:
    """Batch ``n``: ``size - 2`` new tags and moves of two tags of batch ``n // 2``."""
    tags = [f"{label}{n}-{i}" for i in range(size - 2)] + [f"{label}{n // 2}-{i}" for i in (0, 1)]
    events = []
    for i, tag in enumerate(tags):
        ident = f"{label}{n}-{i}"
        events.append(
            TagMoved(
                "https://registry.example.com/webhook",
                ident,
                hashlib.sha256(ident.encode()).digest(),
                START + timedelta(seconds=n, microseconds=i),
                "docker.io/library/app",
                tag,
                hashlib.sha256(f"{n}".encode()).hexdigest(),  # stored form: bare sha256 hex
                "alice",
                None,
                None,
            )
        )
    return [
        Item(RawRecord("ocitag.events", 0, n * size + i, 0, None, b"", ()), e)
        for i, e in enumerate(events)
    ]


def _backend_ns(pid: int | None) -> int:
    """A backend's time on a CPU so far (0 when it cannot be read: another host)."""
    if pid is None:
        return 0
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except OSError:
        return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class _Side:
    """One store on its own database, and what its batches cost."""

    def __init__(self, pool: asyncpg.Pool, store: Any, backend: int | None) -> None:
        self.pool, self.store, self.backend = pool, store, backend
        self.wall: list[float] = []
        self.cpu = 0.0
        self.server_ns = 0
        #: the server's CPU inside the store's lookup and write statements, ns
        self.server_in: dict[str, int] = defaultdict(int)
        self.statements: dict[str, list[float]] = defaultdict(list)

    def logged(self, query: Any) -> None:
        self.statements[" ".join(query.query.split()[:3])].append(query.elapsed)


async def _partitions(url: str, count: int) -> None:
    """Rotate a fresh store until the record has ``count`` partitions (the history as
    many), as the maintainer does every ``partition_seconds``."""
    conn = await asyncpg.connect(url)
    try:
        while True:
            epoch = await conn.fetchval("SELECT epoch FROM processed_current")
            attached = await conn.fetchval(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'processed_events'::regclass"
            )
            if attached >= count:
                return
            await partitions.ensure_partition(conn, epoch + 1)
            await partitions.rotate(conn, epoch)
            await partitions.ensure_partition(conn, epoch + 2)
    finally:
        await conn.close()


def _clocked(module: ModuleType, side: _Side) -> None:
    """The server's CPU inside each of the module's two statements, into ``side``."""
    statement = module._one_row
    names = {id(module._LOOKUP): "lookup", id(module._WRITE): "write"}

    async def one_row(conn: Any, query: str, *args: object) -> Any:
        started = _backend_ns(side.backend)
        try:
            return await statement(conn, query, *args)
        finally:
            side.server_in[names.get(id(query), "other")] += _backend_ns(side.backend) - started

    setattr(module, "_one_row", one_row)  # noqa: B010 (a module given as a value)


async def _side(url: str, store_module: ModuleType) -> _Side:
    pool = await open_pool(url, min_size=1, max_size=1, command_timeout=60, idle_in_transaction=60)
    async with pool.acquire() as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
    side = _Side(pool, store_module.Store(pool, CTX), backend if _backend_ns(backend) else None)
    async with pool.acquire() as conn:
        conn.add_query_logger(side.logged)
    _clocked(store_module, side)
    return side


async def run(
    baseline: Path, rounds: int, block: int, size: int, partition_count: int
) -> dict[str, Any]:
    services = discover()
    modules = {"before": baseline_store(baseline), "after": this_store}
    schemas = {"before": baseline_schema(baseline), "after": available()[-1].version}
    sides: dict[str, _Side] = {}
    for name in SYSTEMS:
        url = await create_database(
            services.database_url, unique(f"storeab_{name}"), up_to=schemas[name]
        )
        await _partitions(url, partition_count)
        sides[name] = await _side(url, modules[name])
    n = 0
    try:
        for r in range(rounds):
            for name in SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]:
                side, started = sides[name], _cpu()
                server = _backend_ns(side.backend)
                for k in range(block):
                    items = batch(n + k, name, size)
                    t = time.perf_counter()
                    await side.store.apply(items, datetime.now(UTC))
                    side.wall.append((time.perf_counter() - t) * 1000)
                side.cpu += _cpu() - started
                side.server_ns += _backend_ns(side.backend) - server
            n += block
        await asyncio.sleep(0.2)  # query loggers are called soon after, not during
    finally:
        for side in sides.values():
            await side.pool.close()
    return {
        "benchmark": "store-ab",
        "config": {
            "baseline": str(baseline),
            "rounds": rounds,
            "block": block,
            "batch": size,
            "partitions": partition_count,
            "schemas": schemas,
        },
        "machine": machine(),
        "code": code_version(),
        "systems": {name: _summary(side) for name, side in sides.items()},
    }


def _summary(side: _Side) -> dict[str, Any]:
    batches = len(side.wall)
    return {
        "batches": batches,
        "wall_ms": {
            "p50": round(statistics.median(side.wall), 2),
            "p90": round(_quantile(side.wall, 0.9), 2),
            "p99": round(_quantile(side.wall, 0.99), 2),
            "mean": round(statistics.fmean(side.wall), 2),
        },
        "cpu_us_per_batch": round(side.cpu / batches * 1e6),
        # None: the server's backend could not be read (another host)
        "server_cpu_us_per_batch": round(side.server_ns / batches / 1000) if side.backend else None,
        "server_cpu_us_per_batch_in": {
            name: round(ns / batches / 1000) for name, ns in sorted(side.server_in.items())
        }
        if side.backend
        else {},
        "statements_per_batch": round(sum(len(v) for v in side.statements.values()) / batches, 2),
        # statements run at least once a batch (not the type introspection, analyses…)
        "statement_ms_per_batch": {
            q: round(sum(v) * 1000 / batches, 2)
            for q, v in sorted(side.statements.items())
            if len(v) >= batches
        },
    }


def render(results: dict[str, Any]) -> str:
    before, after = results["systems"]["before"], results["systems"]["after"]
    measures: list[tuple[str, Any, Any]] = [
        (f"wall ms {k}", before["wall_ms"][k], after["wall_ms"][k]) for k in before["wall_ms"]
    ]
    measures += [
        ("CPU µs per batch, this process", before["cpu_us_per_batch"], after["cpu_us_per_batch"]),
        (
            "CPU µs per batch, PostgreSQL",
            before["server_cpu_us_per_batch"],
            after["server_cpu_us_per_batch"],
        ),
    ]
    measures += [
        (
            f"— of which in the {statement}",
            before["server_cpu_us_per_batch_in"].get(statement),
            after["server_cpu_us_per_batch_in"].get(statement),
        )
        for statement in ("lookup", "write")
        if statement in before["server_cpu_us_per_batch_in"]
    ]
    measures.append(
        ("statements per batch", before["statements_per_batch"], after["statements_per_batch"])
    )
    rows = [[name, b, a, ratio(a, b)] for name, b, a in measures]
    spent = {name: results["systems"][name]["statement_ms_per_batch"] for name in SYSTEMS}
    statements = sorted(set(spent["before"]) | set(spent["after"]))
    config = results["config"]
    return (
        table(["per batch", "before", "after", "after / before"], rows)
        + "\n\n"
        + table(
            ["ms per batch in the statement …", "before", "after"],
            [[f"{q} …", spent["before"].get(q), spent["after"].get(q)] for q in statements],
        )
        + f"\nbefore: worker/store.py of {config['baseline']}, migrations to"
        f" {config['schemas']['before']:04d} (after: {config['schemas']['after']:04d});"
        f" {before['batches']:,} batches of"
        f" {config['batch']} each; {config['partitions']} partitions of the record; load average"
        " at start"
        f" {results['machine']['load_average_1m_at_start']}"
    )


def main() -> None:
    raw = os.environ.get("BENCH_STORE_BASELINE")
    if not raw:
        raise SystemExit("BENCH_STORE_BASELINE: set it to another checkout of the worker")
    results = asyncio.run(
        run(
            Path(raw),
            env_int("BENCH_STORE_AB_ROUNDS", 6),
            env_int("BENCH_STORE_AB_BLOCK", 100),
            env_int("BENCH_STORE_AB_BATCH", 8),
            env_int("BENCH_STORE_AB_PARTITIONS", 2),
        )
    )
    path = write_results("store-ab", results, Path(os.environ.get("BENCH_RESULTS", str(RESULTS))))
    print(render(results))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
