"""The store's A/B on its own (``make bench-store-ab``): ``Store.apply`` of small batches,
as a steady rate gives them (BENCH_STORE_AB_BATCH events, 8: 6 new tags and 2 moves of
earlier ones), this checkout's ``worker/store.py`` against the one of another checkout
(BENCH_STORE_BASELINE, required), in one process, each on a fresh migrated database
through the worker's own pool (one connection).

The baseline's ``worker/store.py`` is loaded from its file and runs on this checkout's
other modules: for changes confined to the store. The two alternate in blocks of
BENCH_STORE_AB_BLOCK batches (100; A B, then B A, …) for BENCH_STORE_AB_ROUNDS rounds
(6), so the machine's drift falls on both. Per batch: wall time (p50, p90, p99, mean),
this process's CPU, the statements sent (a query logger; the pool's reset on release
included) and their time as the client sees it, by statement.

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
from worker import store as this_store
from worker.db import open_pool
from worker.events import RawRecord, TagMoved
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


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class _Side:
    """One store on its own database, and what its batches cost."""

    def __init__(self, pool: asyncpg.Pool, store: Any) -> None:
        self.pool, self.store = pool, store
        self.wall: list[float] = []
        self.cpu = 0.0
        self.statements: dict[str, list[float]] = defaultdict(list)

    def logged(self, query: Any) -> None:
        self.statements[" ".join(query.query.split()[:3])].append(query.elapsed)


async def _side(url: str, store_module: ModuleType) -> _Side:
    pool = await open_pool(url, min_size=1, max_size=1, command_timeout=60, idle_in_transaction=60)
    side = _Side(pool, store_module.Store(pool, CTX))
    async with pool.acquire() as conn:
        conn.add_query_logger(side.logged)
    return side


async def run(baseline: Path, rounds: int, block: int, size: int) -> dict[str, Any]:
    services = discover()
    modules = {"before": baseline_store(baseline), "after": this_store}
    sides: dict[str, _Side] = {}
    for name in SYSTEMS:
        url = await create_database(services.database_url, unique(f"storeab_{name}"))
        sides[name] = await _side(url, modules[name])
    n = 0
    try:
        for r in range(rounds):
            for name in SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]:
                side, started = sides[name], _cpu()
                for k in range(block):
                    items = batch(n + k, name, size)
                    t = time.perf_counter()
                    await side.store.apply(items, datetime.now(UTC))
                    side.wall.append((time.perf_counter() - t) * 1000)
                side.cpu += _cpu() - started
            n += block
        await asyncio.sleep(0.2)  # query loggers are called soon after, not during
    finally:
        for side in sides.values():
            await side.pool.close()
    return {
        "benchmark": "store-ab",
        "config": {"baseline": str(baseline), "rounds": rounds, "block": block, "batch": size},
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
        ("statements per batch", before["statements_per_batch"], after["statements_per_batch"]),
    ]
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
        + f"\nbefore: worker/store.py of {config['baseline']}; {before['batches']:,} batches of"
        f" {config['batch']} each; load average at start"
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
        )
    )
    path = write_results("store-ab", results, Path(os.environ.get("BENCH_RESULTS", str(RESULTS))))
    print(render(results))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
