"""``make bench-history-queries``: how fast the history questions (docs/history.md) are
answered on a large history: ``?at=`` and the digest question (history=false and true),
p50/p99 over many random tags, instants and digests, through the api (``python -m worker
api``, HTTP on loopback) and through the store's query alone (worker/history_reads.py on
the pool the api uses). Goal: p99 < 5 ms at 1 M entries.

The history is built **in SQL, not by draining events** (a 1 M-event drain takes the
better part of an hour on the shared machine; bench/tag_history.py measures the write
side): BENCH_HISTORY_Q_ENTRIES entries (1 000 000) over a quarter as many tags (skewed:
some tags have many entries, most a few), versions 1.. per tag with times growing with
them, about 5 % deletions followed by re-creations, 5 % ``unchanged``, the rest moves to
one of ENTRIES / 2 digests (so a digest is carried by about two entries); UUID event ids;
spread in time order over BENCH_HISTORY_Q_PARTITIONS partitions (8), each a slice of 30
days, then inserted in random order (as random tags arrive) and analysed.

Knobs: BENCH_HISTORY_Q_ENTRIES, BENCH_HISTORY_Q_PARTITIONS, BENCH_HISTORY_Q_SAMPLES
(2000 per question and path), BENCH_SEED. Results: a table, JSON in bench/results/.
The machine is shared: p99 includes its stalls.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg

from bench.api import TOKEN, ApiProcess
from bench.report import percentile, table
from bench.runner import Topics, WorkerProcess
from bench.services import (
    RESULTS,
    code_version,
    create_database,
    create_topics,
    delete_topics,
    discover,
    drop_databases,
    env_int,
    machine,
    unique,
    write_results,
)
from worker import history_reads as hr
from worker.db import open_pool
from worker.history import artifact_bytes, artifact_prefix, artifact_text, name_ref
from worker.history_reads import FIRST, PgHistoryReads, allow_all
from worker.timefmt import format_rfc3339

# {n} entries, {p} partitions (integers formatted in by ``build``)
_BUILD = """
CREATE FUNCTION pg_temp.ref(name text) RETURNS bigint LANGUAGE sql IMMUTABLE
    RETURN ('x' || encode(substring(sha256(convert_to(name, 'UTF8')) FROM 1 FOR 8), 'hex'))
           ::bit(64)::bigint;
SELECT setseed({seed});
CREATE TEMPORARY TABLE g AS
SELECT i, t, row_number() OVER (PARTITION BY t ORDER BY i)::integer AS version, r, a
FROM (SELECT i, (floor(({n} / 4) * power(random(), 1.5)))::bigint AS t, random() AS r,
             (floor(random() * ({n} / 2)))::bigint AS a
      FROM generate_series(0, {n} - 1) AS i) x;
CREATE TEMPORARY TABLE g2 AS
SELECT *, CASE WHEN version = 1 OR coalesce(lag(del) OVER w, false) THEN 1
               WHEN del THEN 4 WHEN r < 0.10 THEN 3 ELSE 2 END AS change
FROM (SELECT *, (r < 0.05 AND version % 2 = 0) AS del FROM g) d
WINDOW w AS (PARTITION BY t ORDER BY version);
CREATE TEMPORARY TABLE g3 AS
SELECT *, count(*) FILTER (WHERE change IN (1, 2)) OVER w AS grp
FROM g2 WINDOW w AS (PARTITION BY t ORDER BY version);
INSERT INTO ocitag_history_names (ref, name)
SELECT pg_temp.ref(name), name FROM (
    SELECT DISTINCT 'bench.example.com/team/r' || (t % 1000) || ':t' || t FROM g3
    UNION SELECT 'actor' || k FROM generate_series(0, 7) k
    UNION SELECT 'https://registry.example.com/webhook') n(name)
ON CONFLICT DO NOTHING;
"""

_FILL = """
INSERT INTO ocitag_history_partitions
SELECT 1000 + e, timestamptz '2026-01-01' + (e - 1) * interval '30 days' / {p},
       CASE WHEN e < {p} THEN timestamptz '2026-01-01' + e * interval '30 days' / {p} END
FROM generate_series(1, {p}) e;
INSERT INTO ocitag_history (at, recorded_at, tag_ref, by_ref, source_ref, version, epoch,
                            change, artifact, event_id)
SELECT at, at + interval '1 second',
       pg_temp.ref('bench.example.com/team/r' || (t % 1000) || ':t' || t),
       pg_temp.ref('actor' || (i % 8)), pg_temp.ref('https://registry.example.com/webhook'),
       version, 1001 + (i * {p} / {n}), change, sha256(int8send(first_value(a) OVER w)),
       uuid_send(gen_random_uuid())
FROM (SELECT *, timestamptz '2026-01-01' + i * interval '30 days' / {n} AS at FROM g3) x
WINDOW w AS (PARTITION BY t, grp ORDER BY version)
ORDER BY random();
ANALYZE ocitag_history;
ANALYZE ocitag_history_names;
"""


async def build(url: str, entries: int, partitions: int, seed: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        values = {"n": entries, "p": partitions, "seed": (seed % 1000) / 1000}
        await conn.execute(_BUILD.format(**values))
        creates = await conn.fetch(
            "SELECT format('CREATE TABLE ocitag_history_e%s PARTITION OF ocitag_history "
            "FOR VALUES IN (%s)', 1000 + e, 1000 + e) FROM generate_series(1, $1) e",
            partitions,
        )
        for row in creates:
            await conn.execute(row[0])
        await conn.execute(_FILL.format(**values))
    finally:
        await conn.close()


Sample = Callable[[random.Random], Awaitable[None]]


async def timed(sample: Sample, count: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    for _ in range(min(50, count)):  # warm-up: connections, plans, caches
        await sample(rng)
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        await sample(rng)
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return {
        "p50_ms": round(percentile(seconds, 50) * 1000, 3),
        "p99_ms": round(percentile(seconds, 99) * 1000, 3),
        "max_ms": round(seconds[-1] * 1000, 3),
    }


class Samples:
    """Random tags with their span of time, and digests, drawn from the history."""

    def __init__(self, tags: list[asyncpg.Record], digests: list[str]) -> None:
        self.tags = tags
        self.digests = digests

    @classmethod
    async def of(cls, pool: asyncpg.Pool) -> Samples:
        tags = await pool.fetch(
            "SELECT n.name, min(h.at) AS first, max(h.at) AS last FROM ocitag_history h "
            "JOIN ocitag_history_names n ON n.ref = h.tag_ref "
            "WHERE h.tag_ref IN (SELECT tag_ref FROM ocitag_history TABLESAMPLE SYSTEM (2) "
            "LIMIT 5000) GROUP BY n.name"
        )
        rows = await pool.fetch(
            "SELECT artifact FROM ocitag_history TABLESAMPLE SYSTEM (2) LIMIT 5000"
        )
        return cls(tags, [artifact_text(r["artifact"]) for r in rows])

    def instant(self, rng: random.Random) -> tuple[str, datetime]:
        """A tag and an instant within its span (a minute either side)."""
        tag = rng.choice(self.tags)
        span = (tag["last"] - tag["first"]).total_seconds()
        return tag["name"], tag["first"] + timedelta(seconds=rng.uniform(-60, span + 60))


async def store_questions(pool: asyncpg.Pool, samples: Samples, count: int, seed: int) -> Any:
    reads = PgHistoryReads(pool)

    async def at(rng: random.Random) -> None:
        await reads.as_of(*samples.instant(rng))

    def digest(history: bool) -> Sample:
        async def sample(rng: random.Random) -> None:
            await reads.tags(
                rng.choice(samples.digests), history=history, after=FIRST, limit=100,
                may_read=allow_all,
            )  # fmt: skip

        return sample

    return {
        "at": await timed(at, count, seed),
        "digest_now": await timed(digest(False), count, seed),
        "digest_history": await timed(digest(True), count, seed),
    }


async def api_questions(base: str, samples: Samples, count: int, seed: int) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(base, headers=headers) as session:

        async def get(path: str) -> None:
            async with session.get(path) as response:
                await response.read()
                if response.status not in (200, 404):
                    raise RuntimeError(f"{path}: {response.status}")

        async def at(rng: random.Random) -> None:
            name, when = samples.instant(rng)
            await get(f"/ocitags/{quote(name, safe='/:')}/?at={format_rfc3339(when)}")

        def digest(history: bool) -> Sample:
            async def sample(rng: random.Random) -> None:
                flag = "true" if history else "false"
                await get(f"/artifacts/sha256:{rng.choice(samples.digests)}/tags?history={flag}")

            return sample

        return {
            "at": await timed(at, count, seed),
            "digest_now": await timed(digest(False), count, seed),
            "digest_history": await timed(digest(True), count, seed),
        }


async def server_side(pool: asyncpg.Pool, samples: Samples, count: int, seed: int) -> Any:
    """The server's own planning and execution time and shared buffers touched
    (EXPLAIN ANALYZE), less sensitive to the shared machine than the round trips."""
    rng = random.Random(seed)
    out: dict[str, Any] = {}
    cases: dict[str, Callable[[], tuple[str, tuple[object, ...]]]] = {
        "at": lambda: (hr._AT, _at_args(samples.instant(rng))),
        "digest_history": lambda: (hr._TAGS, _tags_args(rng.choice(samples.digests), True)),
    }
    for name, case in cases.items():
        planning, execution, buffers = [], [], []
        async with pool.acquire() as conn:
            for _ in range(count):
                query, args = case()
                plan = await conn.fetchval(
                    "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) " + query, *args
                )
                top = json.loads(plan)[0]
                planning.append(top["Planning Time"])
                execution.append(top["Execution Time"])
                buffers.append(top["Plan"]["Shared Hit Blocks"] + top["Plan"]["Shared Read Blocks"])
        for values in (planning, execution, buffers):
            values.sort()
        out[name] = {
            "planning_p50_ms": round(percentile(planning, 50), 3),
            "execution_p50_ms": round(percentile(execution, 50), 3),
            "execution_p99_ms": round(percentile(execution, 99), 3),
            "buffers_p50": percentile(buffers, 50),
            "buffers_p99": percentile(buffers, 99),
        }
    return out


def _at_args(sample: tuple[str, datetime]) -> tuple[object, ...]:
    return (name_ref(sample[0]), sample[1])


def _tags_args(digest: str, history: bool) -> tuple[object, ...]:
    raw = artifact_bytes(digest)
    return (artifact_prefix(raw), raw, *FIRST, history, 101)


async def questions(url: str, base: str, count: int, seed: int) -> dict[str, Any]:
    """Each question's times, store alone and through the api, and the server's side."""
    pool = await open_pool(url, 1, 2, 60, 15)
    try:
        samples = await Samples.of(pool)
        return {
            "tags_sampled": len(samples.tags),
            "store": await store_questions(pool, samples, count, seed),
            "api": await api_questions(base, samples, count, seed),
            "server": await server_side(pool, samples, min(count, 500), seed),
        }
    finally:
        await pool.close()


async def run() -> dict[str, Any]:
    entries = env_int("BENCH_HISTORY_Q_ENTRIES", 1_000_000)
    partitions = env_int("BENCH_HISTORY_Q_PARTITIONS", 8)
    count = env_int("BENCH_HISTORY_Q_SAMPLES", 2_000)
    seed = env_int("BENCH_SEED", 1)
    services = discover()
    name = unique("histq")
    topics = Topics(f"{name}.events", f"{name}.outcomes", f"{name}.dlq")
    url = await create_database(services.database_url, name)
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    api: ApiProcess | None = None
    try:
        started = time.perf_counter()
        await build(url, entries, partitions, seed)
        built = round(time.perf_counter() - started, 1)
        await create_topics(
            services.kafka, [topics.input, topics.outcomes, topics.dlq, topics.state], 1
        )
        worker = WorkerProcess(
            services.kafka, url, topics, f"{name}-group", "warning", logs / "histq-worker.log"
        )  # not started: the api's settings
        api = ApiProcess(worker, logs / "histq-api.log")
        api.start()
        await api.wait_ready()
        found = await questions(url, f"http://127.0.0.1:{api.port}", count, seed)
    finally:
        if api is not None:
            api.stop()
        await delete_topics(
            services.kafka, [topics.input, topics.outcomes, topics.dlq, topics.state]
        )
        await drop_databases(services.database_url, [name])
    return {
        "benchmark": "history-queries",
        "entries": entries,
        "partitions": partitions,
        "samples": count,
        "build_seconds": built,
        "built_in": "SQL (not by draining events)",
        **found,
        "goal": {"p99_ms_below": 5},
        "code": code_version(),
        "machine": machine(),
    }


def render(results: dict[str, Any]) -> str:
    rows = []
    for path in ("store", "api"):
        for question, label in (
            ("at", "?at="),
            ("digest_now", "digest, history=false"),
            ("digest_history", "digest, history=true"),
        ):
            times = results.get(path, {}).get(question)
            if times:
                rows.append([path, label, times["p50_ms"], times["p99_ms"], times["max_ms"]])
    server = [
        [q, v["planning_p50_ms"], v["execution_p50_ms"], v["execution_p99_ms"], v["buffers_p50"],
         v["buffers_p99"]]
        for q, v in results["server"].items()
    ]  # fmt: skip
    return "\n".join(
        [
            f"history questions, {results['entries']:,} entries in {results['partitions']} "
            f"partitions (built in SQL, {results['build_seconds']} s), "
            f"{results['samples']:,} samples each:",
            table(["path", "question", "p50 ms", "p99 ms", "max ms"], rows),
            "\nthe server's side (EXPLAIN ANALYZE; buffers: shared pages touched):",
            table(
                [
                    "question",
                    "planning p50 ms",
                    "exec p50 ms",
                    "exec p99 ms",
                    "buffers p50",
                    "buffers p99",
                ],
                server,
            ),
        ]
    )


def main() -> None:
    results = asyncio.run(run())
    path = write_results("history-queries", results)
    print(render(results))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
