"""The drain's batch path in one process (``make bench-drainpath``): the worker's CPU per
event in each step of a batch of a backlog, this checkout's ``worker/`` against another
checkout's (BENCH_DRAINPATH_BASELINE, required), interleaved, on the real PostgreSQL.

Per batch of BENCH_DRAINPATH_BATCH records (1,000: a drain's batch) of the bench
generator's stream (the floor's backlog: N/4 tags, random event times, 5 % duplicates):
**decode** (each record), **apply** (``Store.apply``: the lookup, the decisions, the
outcomes, the records and history entries, the write statement and COMMIT, through the
worker's pool), of which the **statements** are the client's CPU inside the lookup and
the write (asyncpg's argument encoding and answer decoding), and **pack** (the
outcomes appended to aiokafka record batches, as ``packing.Packer.send_topic`` does; nothing
is sent). The fetch, the produce's network I/O, the offset commit and the metrics are
not here (``make bench-floor`` runs the whole pipeline).

Each side is the other checkout's whole ``worker`` package (bench/outcomes.py
``load_side``), with a database of its own, migrated by this checkout as far as that
side's own migrations go (bench/store_ab.py ``baseline_schema``: the baseline's must be
this checkout's up to there), so that a change with a migration (0011: the write's
arguments) is measured against the schema its baseline runs on. Each round applies a
fresh stream (a new seed and event ids; the tags come back, so later rounds update what
earlier ones created) on both sides, in alternating order (A B, then B A), for
BENCH_DRAINPATH_ROUNDS rounds (5) of BENCH_DRAINPATH_EVENTS events (10,000). The
worker's CPU is ``time.process_time`` (this process only); PostgreSQL's (**postgres**)
is the CPU of each side's one backend during ``apply`` (/proc: the server must run on
this machine; its background processes are not in it, and /proc counts in ticks of
10 ms, a few per cent of a round); per event, median of the rounds. The garbage
collector runs as in the worker (``worker.runtime.tune_gc`` once both sides are set up:
start-up frozen, the young generation collected every ``WORKER_YOUNG_THRESHOLD``
allocations); with Python's defaults it took a fifth to a quarter of this process's CPU
here. The databases are dropped at the end.

BENCH_DRAINPATH_BEFORE_SSLMODE (e.g. ``disable``) connects the before side with that
``sslmode`` instead of the URL's (asyncpg's default ``prefer``: TLS when the server offers
it, as the local stack does): with the baseline a checkout of the same code, the
after / before ratio is what TLS to PostgreSQL costs on this path, the client's CPU and the
backend's (issue "Close to the floor": measure TLS on loopback; production keeps it).
Each side's TLS, as ``pg_stat_ssl`` shows its connection, is in the JSON and under the
table: a URL, ``PGSSLMODE`` or a socket path that leaves both sides alike says so there.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.outcomes import Side, load_side
from bench.report import ratio, table
from bench.services import (
    RESULTS,
    code_version,
    cpu_seconds,
    create_database,
    discover,
    drop_databases,
    env_int,
    machine,
    unique,
    with_sslmode,
    write_results,
)
from bench.store_ab import baseline_schema
from bench.stream import Generator
from bench.versus import shape_for
from worker import runtime
from worker.db import open_pool
from worker.migrate import available

SYSTEMS = ("before", "after")
MODULES = ("decode", "events", "outcomes", "plan", "store")
STEPS = ("decode", "apply", "statements", "pack", "total", "postgres")
START = datetime(2026, 1, 1, tzinfo=UTC)
Records = list[tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...]]]


def round_stream(count: int, round_number: int) -> Records:
    """Round ``round_number``'s records: the backlog's shape, its own seed and ids."""
    generator = Generator(shape_for(count), 20261128 + round_number, f"dp{round_number}")
    return [
        (r.key, r.value, tuple(r.headers))
        for r in generator.many(count, START, timedelta(milliseconds=5))
    ]


class _Clock:
    """CPU seconds spent inside the store's two statements (``_one_row``)."""

    def __init__(self) -> None:
        self.spent = 0.0

    def wrap(self, one_row: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(*args: Any) -> Any:
            started = time.process_time()
            try:
                return await one_row(*args)
            finally:
                self.spent += time.process_time() - started

        return timed


class DrainPath:
    """One side: its modules, its store on its own database, its clock, the process id
    of its one connection's PostgreSQL backend (the server's CPU in ``apply``) and that
    connection's TLS version (None: no TLS)."""

    def __init__(
        self, side: Side, store: Any, clock: _Clock, backend: int, tls: str | None = None
    ) -> None:
        self.side, self.store, self.clock, self.backend = side, store, clock, backend
        self.tls = tls
        self.cpu: dict[str, list[float]] = {step: [] for step in STEPS}

    def raws(self, records: Records) -> list[Any]:
        return [
            self.side.events.RawRecord("ocitag.events", 0, n, 1_700_000_000_000 + n, k, v, h)
            for n, (k, v, h) in enumerate(records)
        ]

    async def batch(self, chunk: Sequence[Any], producer: AIOKafkaProducer) -> dict[str, float]:
        """One batch through decode, the store and packing: CPU seconds by step."""
        ev, decode, plan = self.side.events, self.side.decode, self.side.plan
        self.clock.spent = 0.0
        t0 = time.process_time()
        decoded = [decode.decode(r, 65_536) for r in chunk]
        items = [
            plan.Item(r, e)
            for r, e in zip(chunk, decoded, strict=True)
            if not isinstance(e, ev.Undecodable)
        ]
        server = cpu_seconds(self.backend)
        t1 = time.process_time()
        outcomes = await self.store.apply(items, datetime.now(UTC))
        t2 = time.process_time()
        served = cpu_seconds(self.backend)
        if server is None or served is None:
            raise RuntimeError(f"PostgreSQL's backend {self.backend} is gone (reconnected?)")
        pack(producer, outcomes)
        t3 = time.process_time()
        return {
            "decode": t1 - t0,
            "apply": t2 - t1,
            "statements": self.clock.spent,
            "pack": t3 - t2,
            "total": t3 - t0,
            "postgres": served - server,
        }

    def add(self, spent: dict[str, float], events: int) -> None:
        for step in STEPS:
            self.cpu[step].append(spent[step] / events * 1e6)


async def drain_round(
    paths: Sequence[DrainPath], records: Records, size: int, producer: AIOKafkaProducer
) -> None:
    """The round's stream through every path, batch by batch in lockstep (the order of
    the paths alternating from batch to batch), so that the machine's drift within the
    round falls on each path alike."""
    raws = [path.raws(records) for path in paths]
    totals = [dict.fromkeys(STEPS, 0.0) for _ in paths]
    for n, start in enumerate(range(0, len(records), size)):
        order = range(len(paths)) if n % 2 == 0 else reversed(range(len(paths)))
        for i in order:
            spent = await paths[i].batch(raws[i][start : start + size], producer)
            for step, seconds in spent.items():
                totals[i][step] += seconds
    for path, total in zip(paths, totals, strict=True):
        path.add(total, len(records))


def pack(producer: AIOKafkaProducer, outcomes: Sequence[Any]) -> int:
    """The outcomes in record batches as ``packing.Packer.send_topic`` packs them (one
    partition; a full batch is closed and the next begun); the batches made."""
    made, batch = 1, producer.create_batch()
    for o in outcomes:
        if batch.append(key=o.key, value=o.value, timestamp=None, headers=o.headers) is None:
            batch.close()
            made, batch = made + 1, producer.create_batch()
            batch.append(key=o.key, value=o.value, timestamp=None, headers=o.headers)
    batch.close()
    return made


async def _path(
    name: str, checkout: Path | None, server_url: str, database: str, sslmode: str | None = None
) -> tuple[DrainPath, Any]:
    side = load_side(name, checkout, MODULES)
    schema = available()[-1].version if checkout is None else baseline_schema(checkout)
    url = with_sslmode(await create_database(server_url, database, up_to=schema), sslmode)
    pool = await open_pool(url, min_size=1, max_size=1, command_timeout=60, idle_in_transaction=60)
    ctx = side.outcomes.OutcomeContext(
        "urn:ocitag-worker:bench", "https://ocitag-worker.dev/problems/"
    )
    clock = _Clock()
    side.store._one_row = clock.wrap(side.store._one_row)
    async with pool.acquire() as conn:  # the pool's one connection, kept throughout
        backend = conn.get_server_pid()
        tls = await conn.fetchval(
            "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl"
        )
    return DrainPath(side, side.store.Store(pool, ctx), clock, backend, tls), pool


async def run(
    baseline: Path, rounds: int, events: int, size: int, before_sslmode: str | None = None
) -> dict[str, Any]:
    started, host = datetime.now(UTC), machine()
    services = discover()
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka)  # packs, never sends
    paths: dict[str, DrainPath] = {}
    pools, databases = [], []
    try:
        for name, checkout in (("before", baseline), ("after", None)):
            databases.append(unique(f"drainpath_{name}"))
            sslmode = before_sslmode if name == "before" else None
            paths[name], pool = await _path(
                name, checkout, services.database_url, databases[-1], sslmode
            )
            pools.append(pool)
        both = [paths[name] for name in SYSTEMS]
        runtime.tune_gc(runtime.WORKER_YOUNG_THRESHOLD)  # as the worker runs it
        await drain_round(both, round_stream(2_000, -1), size, producer)  # warm both
        for path in both:
            path.cpu = {step: [] for step in STEPS}
        for r in range(rounds):
            await drain_round(both, round_stream(events, r), size, producer)
    finally:
        for pool in pools:
            await pool.close()
        await producer.stop()
        await drop_databases(services.database_url, databases)
    figures = {}
    for step in STEPS:
        b_r, a_r = paths["before"].cpu[step], paths["after"].cpu[step]
        before, after = statistics.median(b_r), statistics.median(a_r)
        figures[step] = {
            "before_us": round(before, 2),
            "after_us": round(after, 2),
            "ratio": round(after / before, 3) if before else None,
            # each round's after / before (the two ran in lockstep), and their median
            "round_ratios": [round(a / b, 3) if b else None for a, b in zip(a_r, b_r, strict=True)],
            "median_round_ratio": round(
                statistics.median(x / y for x, y in zip(a_r, b_r, strict=True)), 3
            )
            if all(b_r)
            else None,
            "before_rounds_us": [round(v, 2) for v in paths["before"].cpu[step]],
            "after_rounds_us": [round(v, 2) for v in paths["after"].cpu[step]],
        }
    return {
        "benchmark": "drainpath",
        "started_at": started.isoformat(timespec="seconds"),
        "config": {
            "baseline": str(baseline),
            "rounds": rounds,
            "events": events,
            "batch": size,
            "before_sslmode": before_sslmode,
            "tls": {name: paths[name].tls for name in SYSTEMS},
        },
        "machine": host,
        "code": code_version(),
        "figures": figures,
    }


def render(results: dict[str, Any]) -> str:
    rows = [
        [
            step,
            f["before_us"],
            f["after_us"],
            ratio(f["after_us"], f["before_us"]),
            f["median_round_ratio"],
        ]
        for step, f in results["figures"].items()
    ]
    config = results["config"]
    return (
        table(
            [
                "CPU µs per event (median of rounds)",
                "before",
                "after",
                "after / before",
                "median of the rounds' ratios",
            ],
            rows,
        )
        + f"\nbefore: worker/ of {config['baseline']}"
        + (f" (sslmode={config['before_sslmode']})" if config.get("before_sslmode") else "")
        + f"; {config['rounds']} rounds of"
        f" {config['events']:,} events in batches of {config['batch']}; statements: inside"
        " apply; total: this process's steps; postgres: the side's backend during apply"
        f" (the server must be local); load average at start"
        f" {results['machine']['load_average_1m_at_start']}" + _tls_line(config)
    )


def _tls_line(config: dict[str, Any]) -> str:
    """Each side's TLS to PostgreSQL; a warning when the knob asked for a difference
    that the connections do not show."""
    tls = config.get("tls")
    if not tls:
        return ""
    line = f"\nTLS to PostgreSQL: before {tls['before'] or 'none'}, after {tls['after'] or 'none'}"
    if config.get("before_sslmode") and tls["before"] == tls["after"]:
        line += " (both sides alike: BENCH_DRAINPATH_BEFORE_SSLMODE changed nothing)"
    return line


def main() -> None:
    raw = os.environ.get("BENCH_DRAINPATH_BASELINE")
    if not raw:
        raise SystemExit("BENCH_DRAINPATH_BASELINE: set it to another checkout of the worker")
    results = asyncio.run(
        run(
            Path(raw),
            env_int("BENCH_DRAINPATH_ROUNDS", 5),
            env_int("BENCH_DRAINPATH_EVENTS", 10_000),
            env_int("BENCH_DRAINPATH_BATCH", 1_000),
            os.environ.get("BENCH_DRAINPATH_BEFORE_SSLMODE") or None,
        )
    )
    path = write_results("drainpath", results, Path(os.environ.get("BENCH_RESULTS", str(RESULTS))))
    print(render(results))
    print(f"\nresults: {path} (and drainpath-latest.json)")


if __name__ == "__main__":
    main()
