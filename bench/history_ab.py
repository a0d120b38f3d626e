"""``make bench-history-ab``: what history costs the store, in one process, interleaved
(docs/history.md, "Where history's cost goes").

``Store.apply`` with history on against history off (``history_columns`` giving none, as
bench/patched_worker.py does for ``make bench-history``), each on a fresh migrated
database through the worker's own pool (one connection), the same batches on both, in
blocks alternating (on off, then off on, …) for BENCH_HISTORY_AB_ROUNDS rounds (6), so
that the shared machine's drift falls on both. Two shapes: batches like a drain
(BENCH_HISTORY_AB_DRAIN events, 1,000, in blocks of BENCH_HISTORY_AB_DRAIN_BLOCK, 5) and
like a steady 2,000 events/s (BENCH_HISTORY_AB_STEADY, 8, blocks of
BENCH_HISTORY_AB_STEADY_BLOCK, 100). Events: uniform over a quarter as many tags
as events (as ``make bench-history``), a random artifact each, UUID ids, 16 actors.

Per batch and side: wall time, this process's CPU, the write statement's time as the
client sees it, and, with history on, the worker's own Python work for the entries
(``history_columns``). Then, on the "on" database, the server's
side of the write statement: BENCH_HISTORY_AB_EXPLAINS batches of the drain shape each
``EXPLAIN (ANALYZE, BUFFERS, WAL)``-ed in variants (history on, off, without each of the
three history indexes, every name sent as by a worker remembering none), each in a
savepoint rolled back, the variants' order rotated per batch; the cost of a part is the
median of the paired differences.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import resource
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.report import ratio, table
from bench.services import (
    RESULTS,
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
from worker import store as this_store
from worker.db import open_pool
from worker.events import RawRecord, TagMoved
from worker.history import NameMemory, stored_columns
from worker.outcomes import OutcomeContext
from worker.plan import Item

MODES = ("on", "off")
CTX = OutcomeContext("urn:ocitag-worker:bench", "https://ocitag-worker.dev/problems/")
START = datetime(2026, 1, 1, tzinfo=UTC)
ACTORS = [f"actor{i}" for i in range(16)]
# the server's side: each variant of the write statement, (DDL run first, history sent)
VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "history on": ((), "all"),
    "history off": ((), "none"),
    "without (tag_ref, at)": (("DROP INDEX ocitag_history_tag_at",), "all"),
    "without artifact index": (("DROP INDEX ocitag_history_artifact",), "all"),
    "without creations index": (("DROP INDEX ocitag_history_creations",), "all"),
    "every name sent": ((), "every name"),
}
# the write's arguments (migration 0011): the tags, at, epoch, the records, then history's
# (the new names' refs and names, the entries: (at, tag ref, actor ref, source ref, ...))
HISTORY_ARGS = 4


def batch(n: int, size: int, tags: int, seed: int) -> list[Item]:
    """Batch ``n`` of a stream: ``size`` moves of uniformly drawn tags, times increasing."""
    rng = random.Random(seed * 1_000_003 + n)
    items = []
    for i in range(size):
        tag = rng.randrange(tags)
        event = TagMoved(
            "https://registry.example.com/webhook",
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            rng.randbytes(32),
            START + timedelta(milliseconds=n * size + i),
            f"docker.io/team{tag % 97}/app{tag % 1009}",
            f"t{tag}",
            rng.randbytes(32).hex(),  # stored form: bare sha256 hex
            rng.choice(ACTORS),
            None,
            None,
        )
        items.append(Item(RawRecord("ocitag.events", 0, n * size + i, 0, None, b"", ()), event))
    return items


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Timed:
    """The time spent in the store's history function (patched in for "on")."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.columns = this_store.history_columns

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed

    def mode(self, mode: str) -> None:
        if mode == "on":
            this_store.history_columns = self.wrap(self.columns)
        else:
            this_store.history_columns = lambda *_, **__: stored_columns(())


class _Side:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool, self.store = pool, this_store.Store(pool, CTX)
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.python: list[float] = []
        self.statements: dict[str, list[float]] = defaultdict(list)

    def logged(self, query: Any) -> None:
        self.statements[" ".join(query.query.split()[:3])].append(query.elapsed)


async def _side(url: str) -> _Side:
    pool = await open_pool(
        url, min_size=1, max_size=1, command_timeout=120, idle_in_transaction=120
    )
    side = _Side(pool)
    async with pool.acquire() as conn:
        conn.add_query_logger(side.logged)
    return side


async def one_shape(
    server: str, shape: str, *, size: int, rounds: int, block: int, seed: int, timed: _Timed
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The interleaved rounds of one batch shape; returns the summary, the batches run
    and the databases' names."""
    tags = max(1, rounds * block * size // 4)
    names = {m: unique(f"histab_{shape}_{m}") for m in MODES}
    urls = {m: await create_database(server, names[m]) for m in MODES}
    sides = {m: await _side(urls[m]) for m in MODES}
    n = 0
    try:
        for r in range(rounds):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                side = sides[mode]
                timed.mode(mode)
                for k in range(block):
                    items = batch(n + k, size, tags, seed)
                    timed.seconds, cpu, t = 0.0, _cpu(), time.perf_counter()
                    await side.store.apply(items, datetime.now(UTC))
                    side.wall.append((time.perf_counter() - t) * 1000)
                    side.cpu.append((_cpu() - cpu) * 1e6)
                    side.python.append(timed.seconds * 1e6)
            n += block
        await asyncio.sleep(0.2)  # query loggers are called soon after, not during
    finally:
        timed.mode("on")
        for side in sides.values():
            await side.pool.close()
    summary = {"batch": size, "tags": tags, **{m: _summary(sides[m]) for m in MODES}}
    return summary, n, names


def _summary(side: _Side) -> dict[str, Any]:
    batches = len(side.wall)
    return {
        "batches": batches,
        "wall_ms_p50": round(statistics.median(side.wall), 3),
        "wall_ms_mean": round(statistics.fmean(side.wall), 3),
        "cpu_us_p50": round(statistics.median(side.cpu)),
        "cpu_us_mean": round(statistics.fmean(side.cpu)),
        "history_python_us_p50": round(statistics.median(side.python)),
        "statement_ms_per_batch": {
            q: round(sum(v) * 1000 / batches, 3)
            for q, v in sorted(side.statements.items())
            if len(v) >= batches
        },
    }


class _ExplainedError(Exception):
    """Raised once the write statement's variants were explained: the batch is undone."""


def _args(args: Sequence[Any], history: str, stored: dict[int, str]) -> list[Any]:
    out = list(args)
    if history == "none":
        out[HISTORY_ARGS:] = [[] for _ in out[HISTORY_ARGS:]]
    elif history == "every name":  # as a worker that remembers none
        names = {**stored, **dict(zip(out[HISTORY_ARGS], out[HISTORY_ARGS + 1], strict=True))}
        refs = sorted({r for entry in out[HISTORY_ARGS + 2] for r in entry[1:4]})
        out[HISTORY_ARGS : HISTORY_ARGS + 2] = [refs, [names[r] for r in refs]]
    return out


# The write statement itself: since migration 0009 the store calls a function, whose
# EXPLAIN would show the call only; its body is explained here as a statement of its own
# (each parameter cast to the function's argument type, planned for its parameters as
# the store's statements were before 0009), so that the plan shows each CTE.
_WRITE_FUNCTION = """
SELECT prosrc, pg_get_function_identity_arguments(oid) FROM pg_proc
WHERE proname = 'ocitag_store_write'
"""


async def _write_statement(conn: asyncpg.Connection) -> str:
    """The store's write statement: the body of migration 0009's function."""
    function = await conn.fetchrow(_WRITE_FUNCTION)
    if function is None:
        raise SystemExit("no ocitag_store_write: the database is not migrated to 0009")
    source, arguments = function
    types = arguments.split(", ")
    body = source.split("RETURN QUERY", 1)[1].rsplit(";", 1)[0]
    return re.sub(r"\$(\d+)\b", lambda m: f"{m[0]}::{types[int(m[1]) - 1]}", body)


def _measures(plan: dict[str, Any]) -> dict[str, float]:
    """The figures of one EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON)."""
    top = plan["Plan"]
    found = {
        "execution_ms": plan["Execution Time"],
        "planning_ms": plan["Planning Time"],
        "jit_ms": plan.get("JIT", {}).get("Timing", {}).get("Total", 0.0),
    }
    stack = [top]
    while stack:
        node = stack.pop()
        stack.extend(node.get("Plans", []))
        if node.get("Node Type") == "ModifyTable":
            # a data-modifying CTE the main query does not read runs after it: its
            # figures are its node's own, not in the top node's
            relation = node.get("Relation Name")
            for name, value in (
                (f"insert {relation} ms", node["Actual Total Time"]),
                (f"insert {relation} WAL bytes", node.get("WAL Bytes", 0)),
            ):
                found[name] = found.get(name, 0.0) + value
    return found


async def explain(url: str, *, start: int, count: int, size: int, tags: int, seed: int) -> Any:
    """The write statement of ``count`` further drain batches, in every variant, sending
    the names as a worker that remembers every stored one would."""
    conn = await asyncpg.connect(url, server_settings={"plan_cache_mode": "force_custom_plan"})
    explained = "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + await _write_statement(conn)
    stored = {r["ref"]: r["name"] for r in await conn.fetch("SELECT * FROM ocitag_history_names")}
    memory = NameMemory(2 * len(stored) + 2)
    memory.remember({name: ref for ref, name in stored.items()})
    samples: dict[str, list[dict[str, float]]] = defaultdict(list)
    original = this_store._one_row
    names = list(VARIANTS)

    async def explaining(c: Any, query: str, *args: Any) -> Any:
        if query is not this_store._WRITE:
            return await original(c, query, *args)
        k = len(samples[names[0]])
        for name in names[k % len(names) :] + names[: k % len(names)]:
            ddl, history = VARIANTS[name]
            tr = c.transaction()
            await tr.start()
            try:
                for statement in ddl:
                    await c.execute(statement)
                raw = await c.fetchval(explained, *_args(args, history, stored))
                samples[name].append(_measures(json.loads(raw)[0]))
            finally:
                await tr.rollback()
        raise _ExplainedError

    this_store._one_row = explaining  # type: ignore[assignment]
    try:
        sources = this_store._Sources(CTX.worker_source, CTX.problem_base_uri)
        await sources.load(conn)
        for n in range(start, start + count):
            try:
                async with conn.transaction():
                    await this_store._apply(
                        conn,
                        CTX,
                        sources,
                        batch(n, size, tags, seed),
                        datetime.now(UTC),
                        names=memory,
                    )
            except _ExplainedError:
                pass
    finally:
        this_store._one_row = original
        await conn.close()
    return _explained(samples)


def _explained(samples: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    base = samples["history on"]
    out: dict[str, Any] = {}
    for name, runs in samples.items():
        keys = sorted({k for run in runs for k in run})
        out[name] = {k: round(statistics.median(r.get(k, 0.0) for r in runs), 3) for k in keys}
        # paired: what history on costs beyond this variant, batch by batch
        out[name]["history on minus this, ms"] = round(
            statistics.median(
                b["execution_ms"] - r["execution_ms"] for b, r in zip(base, runs, strict=True)
            ),
            3,
        )
    return out


async def run(config: dict[str, int]) -> dict[str, Any]:
    server = discover().database_url
    timed = _Timed()
    shapes: dict[str, Any] = {}
    explained: Any = None
    for shape in ("drain", "steady"):
        size, block = config[shape], config[f"{shape}_block"]
        summary, done, names = await one_shape(
            server,
            shape,
            size=size,
            rounds=config["rounds"],
            block=block,
            seed=config["seed"],
            timed=timed,
        )
        shapes[shape] = summary
        try:
            if shape == "drain" and config["explains"]:
                explained = await explain(
                    with_database(server, names["on"]),
                    start=done,
                    count=config["explains"],
                    size=size,
                    tags=summary["tags"],
                    seed=config["seed"],
                )
        finally:
            await drop_databases(server, names.values())
    return {
        "benchmark": "history-ab",
        "config": config,
        "machine": machine(),
        "code": code_version(),
        "shapes": shapes,
        "explained": explained,
    }


def render(results: dict[str, Any]) -> str:
    out = []
    for shape, s in results["shapes"].items():
        on, off = s["on"], s["off"]
        rows: list[list[Any]] = [
            [k, on[k], off[k], ratio(on[k], off[k])]
            for k in ("wall_ms_p50", "wall_ms_mean", "cpu_us_p50", "cpu_us_mean")
        ]
        rows.append(["history's Python µs p50", on["history_python_us_p50"], 0, None])
        for q in sorted(set(on["statement_ms_per_batch"]) | set(off["statement_ms_per_batch"])):
            b, a = on["statement_ms_per_batch"].get(q), off["statement_ms_per_batch"].get(q)
            rows.append([f"ms in {q} …", b, a, ratio(b, a) if a and b else None])
        out.append(
            f"{shape}: batches of {s['batch']}, {on['batches']} per side, {s['tags']:,} tags"
        )
        out.append(table(["per batch", "history on", "history off", "on / off"], rows))
        out.append("")
    if results["explained"]:
        e = results["explained"]
        keys = sorted({k for v in e.values() for k in v})
        out.append("the write statement, server side (medians; drain batches):")
        out.append(table(["", *e], [[k, *(e[v].get(k) for v in e)] for k in keys]))
    out.append(f"load average at start {results['machine']['load_average_1m_at_start']}")
    return "\n".join(out)


def main() -> None:
    config = {
        "rounds": env_int("BENCH_HISTORY_AB_ROUNDS", 6),
        "drain": env_int("BENCH_HISTORY_AB_DRAIN", 1000),
        "drain_block": env_int("BENCH_HISTORY_AB_DRAIN_BLOCK", 5),
        "steady": env_int("BENCH_HISTORY_AB_STEADY", 8),
        "steady_block": env_int("BENCH_HISTORY_AB_STEADY_BLOCK", 100),
        "explains": env_int("BENCH_HISTORY_AB_EXPLAINS", 12),
        "seed": env_int("BENCH_SEED", 1),
    }
    results = asyncio.run(run(config))
    path = write_results("history-ab", results, Path(os.environ.get("BENCH_RESULTS", str(RESULTS))))
    print(render(results))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
