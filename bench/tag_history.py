"""``make bench-history``: what keeping tag history (docs/history.md) costs, history on
against history off in the same run, and how fast its questions are answered.

1. One backlog (the workload shape of bench/history.py: uniform tags, N/4 distinct, 5 %
   duplicates) drained by the real worker twice per round, on fresh databases: history
   on (``python -m worker run``) and off (bench/patched_worker.py with
   ``BENCH_HISTORY_OFF=1``: the same worker writing no entries, in this process only);
   rounds alternate which goes first, so that a drifting machine favours neither. Pace
   (events/s), and the database bytes per applied change (total on - total off, over
   the entries written), with each history relation's and index's own bytes.
2. On the history the last "on" drain left: ``?at=`` (random tag, random instant within
   its span) and the digest question (random digest seen, history=true) through the
   api's own queries (worker/api/history_reads.py), BENCH_HISTORY_QUERIES each, p50 /
   p99 / max in ms (the client's round trip on loopback included).

Knobs: BENCH_HISTORY_EVENTS (100000), BENCH_HISTORY_ROUNDS (1), BENCH_HISTORY_QUERIES
(2000), BENCH_SEED, BENCH_PARTITIONS via bench.pipeline's Config. The machine's noise
applies: compare on and off of the same round, not numbers of other runs.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench import pipeline
from bench.history import database_bytes, shape_for
from bench.report import table
from bench.services import Services, discover, env_int, unique
from worker.history import artifact_text
from worker.history_reads import PgHistoryReads, allow_all

OFF_ENV = "BENCH_HISTORY_OFF"

# every history relation and index, its partitions summed into the parent
_HISTORY_BYTES = """
SELECT coalesce(parent.relname, c.relname) AS name, c.relkind AS kind,
       sum(pg_relation_size(c.oid))::bigint AS bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
LEFT JOIN pg_class parent ON parent.oid = i.inhparent
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i', 't')
  AND coalesce(parent.relname, c.relname) LIKE 'ocitag_history%'
GROUP BY 1, 2 ORDER BY 1
"""


async def history_bytes(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(_HISTORY_BYTES)
        entries = await conn.fetchval("SELECT count(*) FROM ocitag_history")
    finally:
        await conn.close()
    return {"entries": int(entries), "relations": {r["name"]: int(r["bytes"]) for r in rows}}


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


async def query_times(url: str, count: int, seed: int) -> dict[str, Any]:
    """``?at=`` and the digest question on the history at ``url``."""
    rng = random.Random(seed)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        tags = await pool.fetch(
            "SELECT n.name, min(h.at) AS first, max(h.at) AS last FROM ocitag_history h "
            "JOIN ocitag_history_names n ON n.ref = h.tag_ref GROUP BY n.name"
        )
        digests = [
            artifact_text(r["artifact"])
            for r in await pool.fetch(
                "SELECT artifact FROM ocitag_history TABLESAMPLE SYSTEM (5) LIMIT 5000"
            )
        ]
        reads = PgHistoryReads(pool)
        at_times, tag_times = [], []
        for _ in range(count):
            tag = rng.choice(tags)
            span = (tag["last"] - tag["first"]).total_seconds()
            instant = tag["first"] + timedelta(seconds=rng.uniform(-1, span + 1))
            started = time.perf_counter()
            await reads.as_of(tag["name"], instant)
            at_times.append(time.perf_counter() - started)
        for _ in range(count):
            started = time.perf_counter()
            await reads.tags(
                rng.choice(digests), history=True, after=(-(2**63), -1), limit=100,
                may_read=allow_all,
            )  # fmt: skip
            tag_times.append(time.perf_counter() - started)
    finally:
        await pool.close()
    return {
        "tags": len(tags),
        "at": percentiles(at_times),
        "digest": percentiles(tag_times),
    }


async def one_round(
    ctx: pipeline.Context, base: pipeline.Config, index: int, say: Any
) -> dict[str, Any]:
    order = ("on", "off") if index % 2 == 0 else ("off", "on")
    out: dict[str, Any] = {}
    for mode in order:
        ctx.config = replace(
            base, worker_env={**base.worker_env, OFF_ENV: "1"} if mode == "off" else base.worker_env
        )
        say(f"history {mode}, round {index + 1}: draining")
        setup, drained = await pipeline.worker_run(ctx, f"{mode}{index}", "warning")
        out[mode] = {
            "events_per_second": drained["events_per_second"],
            "seconds": drained.get("seconds"),
            "outcomes": drained["outcomes"],
            "database": await database_bytes(setup.database_url),
            "history": await history_bytes(setup.database_url),
            "database_url": setup.database_url,
        }
    on, off = out["on"], out["off"]
    entries = on["history"]["entries"]
    out["pace_ratio"] = round(on["events_per_second"] / off["events_per_second"], 3)
    out["entries"] = entries
    out["extra_bytes_per_change"] = round(
        (on["database"]["total"] - off["database"]["total"]) / max(entries, 1), 1
    )
    out["bytes_per_change"] = {
        name: round(size / max(entries, 1), 1) for name, size in on["history"]["relations"].items()
    }
    return out


async def run(services: Services, say: Any) -> dict[str, Any]:
    events = env_int("BENCH_HISTORY_EVENTS", 100_000)
    rounds = max(1, env_int("BENCH_HISTORY_ROUNDS", 1))
    queries = env_int("BENCH_HISTORY_QUERIES", 2_000)
    config = pipeline.Config.from_env()
    base = replace(config, events=events, tags=max(1, events // 4), chart=False)
    ctx = pipeline.Context(base, services, unique("taghist"), log_dir=base.results_dir / "logs")
    results: dict[str, Any] = {
        "events": events,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rounds": [],
    }
    try:
        say(f"history: producing {events:,} events")
        results["stream"] = await pipeline.load_stream(ctx, shape_for(events))
        for index in range(rounds):
            results["rounds"].append(await one_round(ctx, base, index, say))
        last_on = results["rounds"][-1]["on"]["database_url"]
        say(f"history: {queries:,} queries of each kind")
        results["queries"] = await query_times(last_on, queries, base.seed)
    finally:
        await pipeline.clean_up(ctx)
    for each in results["rounds"]:
        for mode in ("on", "off"):
            each[mode].pop("database_url", None)
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def render(results: dict[str, Any]) -> str:
    rows = [
        [
            n + 1,
            r["on"]["events_per_second"],
            r["off"]["events_per_second"],
            r["pace_ratio"],
            r["entries"],
            r["extra_bytes_per_change"],
        ]
        for n, r in enumerate(results["rounds"])
    ]
    out = [
        f"history on against off, {results['events']:,} events:",
        table(
            ["round", "on events/s", "off events/s", "on/off", "entries", "extra B/change"],
            rows,
        ),
        "\nbytes per applied change, by history relation (last round):",
        table(
            ["relation", "B/change"],
            sorted(results["rounds"][-1]["bytes_per_change"].items()),
        ),
    ]
    q = results["queries"]
    out += [
        f"\nqueries on {q['tags']:,} tags:",
        table(
            ["question", "p50 ms", "p99 ms", "max ms"],
            [
                ["?at=", q["at"]["p50_ms"], q["at"]["p99_ms"], q["at"]["max_ms"]],
                ["digest", q["digest"]["p50_ms"], q["digest"]["p99_ms"], q["digest"]["max_ms"]],
            ],
        ),
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    del argv
    services = discover()
    results = asyncio.run(run(services, pipeline.say))
    config = pipeline.Config.from_env()
    config.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = config.results_dir / f"tag-history-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    (config.results_dir / "tag-history-latest.json").write_text(path.read_text())
    print(render(results))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
