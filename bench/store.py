"""The store benchmark (``make bench-store``): what batching buys and what the guards
cost, on one fresh database in one run.

- guarded, batched: ``Store.apply`` on batches of 1,000 events (claim, read, decide,
  guarded write, outcomes: the worker's path);
- guarded, per event: ``Store.apply`` with one item each (one transaction per event);
- plain, batched (reference): one unguarded ``INSERT … SELECT FROM unnest … ON CONFLICT
  DO UPDATE`` per 1,000 events (last event of each tag in the batch wins; no
  idempotency record, no ordering, no version guard, no outcome);
- plain, per event (reference): the same statement with one row, one at a time.

Events: many tags with several events each (uniform popularity), 3 % out of order, no
duplicates or invalid ones; decoded beforehand (not timed). Each repetition uses new
event ids and new tags, so every repetition starts from the same empty state. Medians.

Knobs: BENCH_STORE_EVENTS (20000), BENCH_STORE_TAGS (4000), BENCH_STORE_SINGLE_EVENTS
(2000), BENCH_STORE_BATCH (1000), BENCH_STORE_REPEAT (3), BENCH_RESULTS.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
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
    write_results,
)
from bench.stream import Generator, StreamShape
from worker.db import open_pool
from worker.decode import decode
from worker.events import RawRecord, TagMoved
from worker.outcomes import OutcomeContext
from worker.plan import Item
from worker.store import Store

_PLAIN_TABLE = "CREATE TABLE bench_plain (LIKE ocitags INCLUDING ALL)"
_COLUMNS = (
    "repository, tag, artifact, created_by, created_on, last_modified_by, last_modified_on, "
    "version, last_event_source, last_event_id"
)
_UPSERT = """
ON CONFLICT (repository, tag) DO UPDATE
SET artifact = EXCLUDED.artifact, last_modified_by = EXCLUDED.last_modified_by,
    last_modified_on = EXCLUDED.last_modified_on, version = bench_plain.version + 1,
    last_event_source = EXCLUDED.last_event_source, last_event_id = EXCLUDED.last_event_id
"""
PLAIN_BATCH = f"""
INSERT INTO bench_plain ({_COLUMNS})
SELECT r, t, a, b, o, b, o, 1, s, i
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
            $7::text[]) AS u(r, t, a, b, o, s, i)
{_UPSERT}"""
PLAIN_ONE = f"""
INSERT INTO bench_plain ({_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $4, $5, 1, $6, $7)
{_UPSERT}"""


@dataclass
class StoreConfig:
    events: int = 20_000
    tags: int = 4_000
    single_events: int = 2_000
    batch: int = 1_000
    repeat: int = 3
    results_dir: Path = RESULTS

    @classmethod
    def from_env(cls) -> StoreConfig:
        return cls(
            events=env_int("BENCH_STORE_EVENTS", 20_000),
            tags=env_int("BENCH_STORE_TAGS", 4_000),
            single_events=env_int("BENCH_STORE_SINGLE_EVENTS", 2_000),
            batch=env_int("BENCH_STORE_BATCH", 1_000),
            repeat=env_int("BENCH_STORE_REPEAT", 3),
            results_dir=Path(os.environ.get("BENCH_RESULTS", str(RESULTS))),
        )


def make_items(count: int, tags: int, namespace: str, seed: int) -> list[Item]:
    shape = StreamShape(tags=tags, duplicates=0, invalid=0, binary=0, zipf=0, namespace=namespace)
    generator = Generator(shape, seed, namespace)
    start = datetime.now(UTC) - timedelta(days=1)
    records = generator.many(count, start, timedelta(milliseconds=5))
    items = []
    for n, record in enumerate(records):
        raw = RawRecord("bench", 0, n, 0, record.key, record.value, tuple(record.headers))
        event = decode(raw, 65_536)
        assert isinstance(event, TagMoved), event
        items.append(Item(raw, event))
    return items


def _rows(items: Sequence[Item]) -> list[tuple[str, str, str, str, datetime, str, str]]:
    rows = []
    for item in items:
        e = item.event
        assert isinstance(e, TagMoved)
        rows.append((e.repository, e.tag, e.artifact, e.actor, e.time, e.source, e.id))
    return rows


async def _timed(work: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of this (the client's) process meanwhile."""
    started, cpu = time.perf_counter(), time.process_time()
    await work()
    return time.perf_counter() - started, time.process_time() - cpu


async def guarded_batched(store: Store, items: Sequence[Item], batch: int) -> tuple[float, float]:
    async def work() -> None:
        for first in range(0, len(items), batch):
            await store.apply(items[first : first + batch], datetime.now(UTC))

    return await _timed(work)


async def guarded_single(store: Store, items: Sequence[Item]) -> tuple[float, float]:
    async def work() -> None:
        for item in items:
            await store.apply([item], datetime.now(UTC))

    return await _timed(work)


async def plain_batched(
    pool: asyncpg.Pool, items: Sequence[Item], batch: int
) -> tuple[float, float]:
    async def work() -> None:
        for first in range(0, len(items), batch):
            latest = {(r[0], r[1]): r for r in _rows(items[first : first + batch])}
            columns = list(zip(*latest.values(), strict=True))
            async with pool.acquire() as conn:
                await conn.execute(PLAIN_BATCH, *(list(c) for c in columns))

    return await _timed(work)


async def plain_single(pool: asyncpg.Pool, items: Sequence[Item]) -> tuple[float, float]:
    async def work() -> None:
        for row in _rows(items):
            async with pool.acquire() as conn:
                await conn.execute(PLAIN_ONE, *row)

    return await _timed(work)


async def run(config: StoreConfig, services: Services) -> dict[str, Any]:
    name = unique("benchstore")
    url = await create_database(services.database_url, name)
    ctx = OutcomeContext("urn:ocitag-worker:bench", "https://ocitag-worker.dev/problems/")
    seconds: dict[str, list[tuple[float, float]]] = {
        "guarded_batched": [], "guarded_single": [], "plain_batched": [], "plain_single": [],
    }  # fmt: skip
    try:
        pool = await open_pool(url, 2, 10, 60, 15)
        try:
            async with pool.acquire() as conn:
                await conn.execute(_PLAIN_TABLE)
            store = Store(pool, ctx)
            for rep in range(config.repeat):
                many = config.events
                one = config.single_events
                tags_one = max(1, config.tags * one // many)
                seconds["guarded_batched"].append(
                    await guarded_batched(
                        store, make_items(many, config.tags, f"gb{rep}-", rep), config.batch
                    )
                )
                seconds["guarded_single"].append(
                    await guarded_single(store, make_items(one, tags_one, f"gs{rep}-", rep))
                )
                seconds["plain_batched"].append(
                    await plain_batched(
                        pool, make_items(many, config.tags, f"pb{rep}-", rep), config.batch
                    )
                )
                seconds["plain_single"].append(
                    await plain_single(pool, make_items(one, tags_one, f"ps{rep}-", rep))
                )
                print(f"[bench-store] repetition {rep + 1}/{config.repeat} done", flush=True)
        finally:
            await pool.close()
    finally:
        await drop_databases(services.database_url, [name])
    counts = {
        "guarded_batched": config.events,
        "guarded_single": config.single_events,
        "plain_batched": config.events,
        "plain_single": config.single_events,
    }
    figures: dict[str, dict[str, Any]] = {}
    for key, values in seconds.items():
        median = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        figures[key] = {
            "events": counts[key],
            "seconds": [round(v[0], 3) for v in values],
            "median_seconds": round(median, 3),
            "events_per_second": round(counts[key] / median, 1),
            "us_per_event": round(median / counts[key] * 1e6, 1),
            # Python in the client (building arguments, deciding, outcomes, the driver)
            "client_cpu_us_per_event": round(cpu / counts[key] * 1e6, 1),
        }
    eps: dict[str, float] = {k: v["events_per_second"] for k, v in figures.items()}
    return {
        "benchmark": "store",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "machine": machine(),
        "code": code_version(),
        "figures": figures,
        "ratios": {
            "batched_vs_single_guarded": round(eps["guarded_batched"] / eps["guarded_single"], 2),
            "batched_vs_single_plain": round(eps["plain_batched"] / eps["plain_single"], 2),
            "guard_cost_batched": round(eps["plain_batched"] / eps["guarded_batched"], 2),
            "guard_cost_single": round(eps["plain_single"] / eps["guarded_single"], 2),
        },
    }


LABELS = {
    "guarded_batched": "Store.apply, batches (guarded)",
    "guarded_single": "Store.apply, one event each (guarded)",
    "plain_batched": "plain upsert, batches (no guard; reference)",
    "plain_single": "plain upsert, one row each (no guard; reference)",
}


HEADERS = [
    "store path", "events", "median s", "events/s", "µs/event", "client CPU µs/event",
    "x per-event",
]  # fmt: skip


def render(results: dict[str, Any]) -> str:
    figures = results["figures"]
    single = figures["guarded_single"]["events_per_second"]
    rows = [
        [
            LABELS[key],
            f["events"],
            f["median_seconds"],
            f["events_per_second"],
            f["us_per_event"],
            f.get("client_cpu_us_per_event"),
            round(f["events_per_second"] / single, 2),
        ]
        for key, f in figures.items()
    ]
    r = results["ratios"]
    summary = (
        f"batching: guarded x{r['batched_vs_single_guarded']}, plain "
        f"x{r['batched_vs_single_plain']}; the guards cost x{r['guard_cost_batched']} "
        f"batched and x{r['guard_cost_single']} per event (plain / guarded events/s)"
    )
    return "\n".join([table(HEADERS, rows), "", summary])


def main() -> None:
    config = StoreConfig.from_env()
    results = asyncio.run(run(config, discover()))
    path = write_results("store", results, config.results_dir)
    print(render(results))
    print(f"\nresults: {path} (and store-latest.json)")


if __name__ == "__main__":
    main()
