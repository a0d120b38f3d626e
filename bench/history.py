"""Cost against history (issue "Flat cost at scale"): the same workload shape drained at
several history sizes, each on a fresh database, then a steady-rate latency run on the
database that history left.

The shape: random tags (uniform), N/4 distinct, 5 % duplicates (redeliveries of a
recent record), all valid, 10 % binary content mode, drained from a real broker by the
real worker (log level warning). Per size: pace (events/s over the whole drain, and over
75-95 % committed: the pace *at* that history), database bytes per event (tables +
indexes + TOAST, ``pg_total_relation_size``, per table and in total), the CPU split
(read every figure with its ``other``), peak RSS, the worker's per-stage batch times;
then ``rate`` events/s offered for ``latency_seconds``: p50/p99/max and the per-stage
times (fetch, decode, apply, produce, commit) per second of it.

Knobs: BENCH_HISTORY_SIZES (50000,200000,1000000), BENCH_HISTORY_LATENCY_SECONDS
(= BENCH_LATENCY_SECONDS, 60), BENCH_RATE (2000), BENCH_SEED, BENCH_REPLICAS (1: worker
processes of one group for the drains; the latency run is always one).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import pipeline
from bench.report import table
from bench.services import RESULTS, Services, discover, env_float, env_int, unique
from bench.stream import StreamShape

SIZES = (50_000, 200_000, 1_000_000)

_SIZES_SQL = """
SELECT coalesce(parent.relname, c.relname) AS name,
       sum(pg_total_relation_size(c.oid))::bigint AS total,
       sum(pg_relation_size(c.oid))::bigint AS heap,
       sum(pg_indexes_size(c.oid))::bigint AS indexes,
       count(*)::int AS relations
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
LEFT JOIN pg_class parent ON parent.oid = i.inhparent
WHERE n.nspname = 'public' AND c.relkind = 'r'
GROUP BY 1 ORDER BY 1
"""

_STATS_SQL = """
SELECT relname, n_live_tup, n_dead_tup, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del,
       autovacuum_count, autoanalyze_count
FROM pg_stat_user_tables ORDER BY relname
"""


@dataclass(frozen=True)
class HistoryConfig:
    sizes: tuple[int, ...] = SIZES
    rate: float = 2_000.0
    latency_seconds: float = 60.0
    partitions: int = 6
    seed: int = 20_261_128
    results_dir: Path = RESULTS
    worker_env: tuple[tuple[str, str], ...] = ()
    database_settings: tuple[tuple[str, str], ...] = ()
    replicas: int = 1

    @classmethod
    def from_env(cls, base: pipeline.Config) -> HistoryConfig:
        raw = os.environ.get("BENCH_HISTORY_SIZES", "")
        sizes = tuple(int(s) for s in raw.replace(" ", "").split(",") if s) or SIZES
        return cls(
            sizes=sizes,
            rate=env_float("BENCH_RATE", base.rate),
            latency_seconds=env_float("BENCH_HISTORY_LATENCY_SECONDS", base.latency_seconds),
            partitions=base.partitions,
            seed=env_int("BENCH_SEED", base.seed),
            results_dir=base.results_dir,
            worker_env=tuple(sorted(base.worker_env.items())),
            database_settings=tuple(sorted(base.database_settings.items())),
            replicas=base.replicas,
        )


def shape_for(size: int) -> StreamShape:
    return StreamShape(
        tags=max(1, size // 4), duplicates=0.05, out_of_order=0.0, invalid=0.0, zipf=0.0
    )


async def database_bytes(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(_SIZES_SQL)
        stats = await conn.fetch(_STATS_SQL)
    finally:
        await conn.close()
    tables = {r["name"]: {k: r[k] for k in ("total", "heap", "indexes", "relations")} for r in rows}
    return {
        "total": sum(t["total"] for t in tables.values()),
        "tables": tables,
        "stats": [dict(r) for r in stats],
    }


def window_pace(
    series: Sequence[Sequence[float]], total: int, start: float, end: float
) -> float | None:
    """Events/s between ``start`` and ``end`` (shares of ``total``) committed."""
    points = [(s[0], s[1]) for s in series]
    low = next((p for p in points if p[1] >= start * total), None)
    high = next((p for p in points if p[1] >= end * total), None)
    if low is None or high is None or high[0] <= low[0]:
        return None
    return round((high[1] - low[1]) / (high[0] - low[0]), 1)


def late_pace(series: Sequence[Sequence[float]], total: int) -> float | None:
    """Events/s between 75 % and 95 % committed: the pace with most of the history in."""
    return window_pace(series, total, 0.75, 0.95)


def early_pace(series: Sequence[Sequence[float]], total: int) -> float | None:
    """Events/s between 5 % and 25 % committed. Beside ``late_pace`` of the same drain it
    says whether history slows the worker down with the machine's moods taken out:
    sizes drained minutes apart on a shared virtual machine differ by more than that
    (steal, other tenants), a window of one drain and the next window much less."""
    return window_pace(series, total, 0.05, 0.25)


async def one_size(
    config: HistoryConfig, services: Services, size: int, say: Any
) -> dict[str, Any]:
    base = pipeline.Config(
        events=size,
        tags=max(1, size // 4),
        rate=config.rate,
        latency_seconds=config.latency_seconds,
        partitions=config.partitions,
        seed=config.seed,
        results_dir=config.results_dir,
        chart=False,
        worker_env=dict(config.worker_env),
        database_settings=dict(config.database_settings),
    )
    ctx = pipeline.Context(
        base, services, unique(f"hist{size}"), log_dir=config.results_dir / "logs"
    )
    out: dict[str, Any] = {"size": size}
    try:
        say(f"history {size:,}: producing")
        out["stream"] = await pipeline.load_stream(ctx, shape_for(size))
        say(f"history {size:,}: draining")
        setup, drained = await pipeline.worker_run(
            ctx, f"h{size}", "warning", replicas=config.replicas
        )
        drained.pop("label", None)
        drained["late_events_per_second"] = late_pace(drained["series"], drained["events"])
        drained["early_events_per_second"] = early_pace(drained["series"], drained["events"])
        out["drain"] = drained
        out["database"] = await database_bytes(setup.database_url)
        say(
            f"history {size:,}: {drained['events_per_second']:,.0f} events/s, "
            f"{out['database']['total'] / size:,.0f} B/event; latency"
        )
        if config.latency_seconds > 0:
            out["latency"] = await pipeline.latency_run(ctx, setup)
            out["latency"].pop("cdf_ms", None)
    finally:
        await pipeline.clean_up(ctx)
    return out


async def run(config: HistoryConfig, services: Services, say: Any) -> dict[str, Any]:
    results: dict[str, Any] = {
        "config": {**config.__dict__, "sizes": list(config.sizes)},
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes": [],
    }
    for size in config.sizes:
        results["sizes"].append(await one_size(config, services, size, say))
    results["summary"] = summarise(results)
    return results


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for entry in results["sizes"]:
        drain, db, lat = entry["drain"], entry["database"], entry.get("latency") or {}
        size = entry["size"]
        cpu = drain.get("cpu_cores", {})
        rows.append(
            {
                "size": size,
                "replicas": drain.get("replicas", 1),
                "events_per_second": drain["events_per_second"],
                "early_events_per_second": drain.get("early_events_per_second"),
                "late_events_per_second": drain.get("late_events_per_second"),
                "database_mib": round(db["total"] / 2**20, 1),
                "bytes_per_event": round(db["total"] / size),
                "p50_ms": lat.get("p50_ms"),
                "p99_ms": lat.get("p99_ms"),
                "max_ms": lat.get("max_ms"),
                "peak_rss_mib": max(drain.get("peak_rss_mib") or 0, lat.get("peak_rss_mib") or 0),
                # CPU per event: steadier than the pace on a shared machine
                "wal_bytes_per_event": drain.get("wal_bytes_per_event"),
                "worker_us_per_event": _per_event(cpu.get("worker"), drain["events_per_second"]),
                "postgres_us_per_event": _per_event(
                    cpu.get("postgres"), drain["events_per_second"]
                ),
                "cpu_worker": cpu.get("worker"),
                "cpu_postgres": cpu.get("postgres"),
                "cpu_other": cpu.get("other"),
                "cpu_steal": cpu.get("steal"),
                "latency_cpu_other": (lat.get("cpu_cores") or {}).get("other"),
                "latency_cpu_steal": (lat.get("cpu_cores") or {}).get("steal"),
            }
        )
    flat = (
        round(rows[-1]["events_per_second"] / rows[0]["events_per_second"], 3)
        if len(rows) > 1
        else None
    )
    last = rows[-1] if rows else {}
    within = (
        round(last["late_events_per_second"] / last["early_events_per_second"], 3)
        if last.get("late_events_per_second") and last.get("early_events_per_second")
        else None
    )
    return {"table": rows, "flat_ratio": flat, "flat_within_largest": within}


def _per_event(cores: float | None, events_per_second: float) -> float | None:
    if cores is None or not events_per_second:
        return None
    return round(cores / events_per_second * 1e6, 1)


def render(results: dict[str, Any]) -> str:
    rows = results["summary"]["table"]
    headers = [
        "history events", "replicas", "events/s", "events/s at 5-25 %", "events/s at 75-95 %",
        "DB MiB", "DB B/event",
        "WAL B/event", "p50 ms", "p99 ms", "max ms", "peak RSS MiB", "worker CPU µs/event",
        "postgres CPU µs/event", "CPU worker", "CPU postgres",
        "CPU other (drain)", "CPU steal (drain)", "CPU other (latency)", "CPU steal (latency)",
    ]  # fmt: skip
    columns = (
        "size", "replicas", "events_per_second", "early_events_per_second",
        "late_events_per_second", "database_mib",
        "bytes_per_event", "wal_bytes_per_event", "p50_ms", "p99_ms", "max_ms", "peak_rss_mib",
        "worker_us_per_event", "postgres_us_per_event", "cpu_worker",
        "cpu_postgres", "cpu_other", "cpu_steal", "latency_cpu_other", "latency_cpu_steal",
    )  # fmt: skip
    lines = [table(headers, [[r[c] for c in columns] for r in rows])]
    flat = results["summary"]["flat_ratio"]
    if flat is not None:
        lines.append(f"flat: pace at the largest history / pace at the smallest = {flat:.0%}")
    within = results["summary"].get("flat_within_largest")
    if within is not None:
        lines.append(
            f"flat within the largest drain: pace at 75-95 % / pace at 5-25 % = {within:.0%}"
        )
    for entry in results["sizes"]:
        db = entry["database"]
        parts = ", ".join(
            f"{name} {t['total'] / entry['size']:,.0f} B/event "
            f"(heap {t['heap'] / entry['size']:,.0f}, indexes {t['indexes'] / entry['size']:,.0f})"
            for name, t in db["tables"].items()
        )
        lines.append(f"history {entry['size']:,}: {parts}")
        for key in ("drain", "latency"):
            stages = (entry.get(key) or {}).get("stages")
            if stages:
                lines.append(
                    f"history {entry['size']:,} {key} stages (mean / p99 ≤ / max ≤ ms): "
                    + "; ".join(
                        f"{s} {v['mean_ms']} / {v['p99_le_ms']} / {v['max_le_ms']}"
                        for s, v in stages.items()
                    )
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``make bench``: the pipeline benchmark (unless BENCH_HISTORY_ONLY=1), then the
    history sizes (unless BENCH_HISTORY=0); one JSON, the charts, the tables."""
    del argv
    config = pipeline.Config.from_env()
    services = discover()
    results = asyncio.run(pipeline.run(config, services))
    if config.history or config.history_only:
        history = HistoryConfig.from_env(config)
        results["history"] = asyncio.run(run(history, services, pipeline.say))
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    path = pipeline.save(results, config.results_dir, config.chart)
    print()
    if results["runs"]:
        print(pipeline.render(results))
    if "history" in results:
        print("\ncost against history (same workload shape at each size):")
        print(render(results["history"]))
    print(
        f"\nresults: {path} (and latest.json, latest.png, history-latest.png in "
        f"{config.results_dir})"
    )


if __name__ == "__main__":
    main()
