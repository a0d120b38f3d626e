"""The store against real PostgreSQL: order, idempotency and preconditions under any
delivery order and batching, races between appliers, durability across a restart."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.model import Model
from tests.helpers.services import STACK, Services
from tests.helpers.store import CTX, items, now, race_events, summary
from tests.helpers.strategies import BASE, digest, histories, make_event
from tests.helpers.wait import eventually
from worker.events import TagMoved
from worker.store import Store

pytestmark = pytest.mark.integration


async def rows(pool: asyncpg.Pool) -> dict[str, tuple[str, str, object, int]]:
    found = await pool.fetch(
        "SELECT tag, artifact, last_modified_by, last_modified_on, version FROM ocitags"
    )
    return {
        r["tag"]: (r["artifact"], r["last_modified_by"], r["last_modified_on"], r["version"])
        for r in found
    }


def model_rows(model: Model) -> dict[str, tuple[str, str, object, int]]:
    return {
        tag: (r.artifact, r.last_modified_by, r.last_modified_on, r.version)
        for (_, tag), r in model.rows.items()
    }


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories(), data=st.data())
async def test_any_order_any_batching_matches_the_model(
    pool: asyncpg.Pool, history: list[TagMoved], data: st.DataObject
) -> None:
    await pool.execute("TRUNCATE ocitags, processed_events")
    order = data.draw(st.permutations(history), label="delivery order")
    store, model = Store(pool, CTX), Model()
    position = 0
    while position < len(order):
        size = data.draw(st.integers(1, 8), label="batch size")
        batch = order[position : position + size]
        outcomes = await store.apply(items(batch, position), now())
        for event, outcome in zip(batch, outcomes, strict=True):
            assert summary(outcome) == model.deliver(event), event
        position += size
    assert await rows(pool) == model_rows(model)


async def test_replays_are_byte_identical_and_reuse_is_409(pool: asyncpg.Pool) -> None:
    store = Store(pool, CTX)
    first = make_event("v1", digest(1), BASE, event_id="e1")
    reused = make_event("v1", digest(2), BASE, event_id="e1")  # same id, other content
    bad_precondition = make_event(
        "v1", digest(3), BASE + timedelta(seconds=1), event_id="e2", expected_version=7
    )
    out1 = await store.apply(items([first, bad_precondition]), now())
    out2 = await store.apply(items([first, bad_precondition, reused, reused]), now())
    assert [o.value for o in out2[:2]] == [o.value for o in out1]
    assert all(o.replay for o in out2[:2]) and not out2[2].replay
    assert summary(out2[2]) == summary(out2[3]) and summary(out2[2]).reason == "id-reused"
    # a redelivery of the same record (same offset) gets the very same bytes
    (again,) = await store.apply(items([reused], first_offset=2), now())
    assert again.value == out2[2].value
    assert (await rows(pool))["v1"][3] == 1


async def test_one_batch_costs_a_bounded_number_of_round_trips(pool: asyncpg.Pool) -> None:
    """The statements one connection runs for a batch of 500 events on 50 tags."""
    events = [make_event(f"t{i % 50}", digest(i), BASE + timedelta(seconds=i)) for i in range(1000)]
    calls: Counter[str] = Counter()
    async with pool.acquire() as conn:
        store = Store(_SinglePool(conn), CTX)  # type: ignore[arg-type]
        await store.apply(items(events[:500]), now())  # warms asyncpg's type introspection
        conn.add_query_logger(lambda q: calls.update([" ".join(q.query.split()[:4])]))
        await store.apply(items(events[500:] + events[:10]), now())
        # query loggers are called soon after the statements, not during
        await eventually(lambda: sum(calls.values()) >= 7, timeout=5)
        # BEGIN, claim, read processed (10 duplicates), read tags, write tags, outcomes, COMMIT
        assert sum(calls.values()) == 7, calls


class _SinglePool:
    def __init__(self, conn: object) -> None:
        self._conn = conn

    def acquire(self) -> _SinglePool:
        return self

    async def __aenter__(self) -> object:
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        return None


def _check_race(
    events: list[TagMoved],
    results: list[list[tuple[str, bytes, bool]]],
    final: dict[str, tuple[str, str, object, int]],
) -> None:
    by_event: dict[str, list[tuple[bytes, bool]]] = defaultdict(list)
    for applier in results:
        for event_id, value, replay in applier:
            by_event[event_id].append((value, replay))
    applied_per_tag: Counter[str] = Counter()
    for e in events:
        seen = by_event[e.id]
        assert seen, f"{e.id} never processed"
        assert sum(1 for _, replay in seen if not replay) == 1, f"{e.id} processed more than once"
        assert len({value for value, _ in seen}) == 1, f"{e.id} got different outcomes"
        if json.loads(seen[0][0])["status"] == 200:
            applied_per_tag[e.tag] += 1
    for tag in {e.tag for e in events}:
        best = max((e for e in events if e.tag == tag), key=lambda e: e.order_key)
        artifact, actor, when, version = final[tag]
        assert (artifact, actor, when) == (best.artifact, best.actor, best.time), (
            tag
        )  # no lost update
        assert version == applied_per_tag[tag], tag


async def test_concurrent_appliers_on_separate_connections(
    database_url: str, pool: asyncpg.Pool
) -> None:
    events = race_events(seed=7, tags=6, per_tag=60)

    async def applier(n: int) -> list[tuple[str, bytes, bool]]:
        rng = random.Random(n)
        mine = rng.sample(events, k=len(events) * 3 // 4)  # overlapping: most events twice+
        own = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        store, out = Store(own, CTX), []
        try:
            for start in range(0, len(mine), 25):
                batch = mine[start : start + 25]
                for e, o in zip(batch, await store.apply(items(batch), now()), strict=True):
                    out.append((e.id, o.value, o.replay))
        finally:
            await own.close()
        return out

    results = await asyncio.gather(*(applier(n) for n in range(8)))
    missing = [e for e in events if not any(e.id == i for r in results for i, _, _ in r)]
    results.append(
        [
            (e.id, o.value, o.replay)
            for e, o in zip(
                missing, await Store(pool, CTX).apply(items(missing), now()), strict=True
            )
        ]
        if missing
        else []
    )
    _check_race(events, results, await rows(pool))


async def test_concurrent_appliers_in_separate_processes(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    events = race_events(seed=11, tags=5, per_tag=40)
    procs = []
    for n in range(8):
        out = tmp_path / f"applier{n}.json"
        procs.append(
            (
                out,
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.helpers.applier",
                        database_url,
                        "11",
                        "5",
                        "40",
                        str(n),
                        str(out),
                    ],
                    cwd=Path(__file__).resolve().parents[2],
                ),
            )
        )
    for _, proc in procs:
        assert proc.wait(timeout=120) == 0
    results = [
        [(i, bytes.fromhex(v), r) for i, v, r in json.loads(out.read_text())] for out, _ in procs
    ]
    processed = {i for r in results for i, _, _ in r}
    missing = [e for e in events if e.id not in processed]
    if missing:
        results.append(
            [
                (e.id, o.value, o.replay)
                for e, o in zip(
                    missing, await Store(pool, CTX).apply(items(missing), now()), strict=True
                )
            ]
        )
    _check_race(events, results, await rows(pool))


async def test_processed_record_survives_a_postgres_restart(
    services: Services, database_url: str
) -> None:
    if not services.can_restart:
        pytest.skip("needs the local stack to restart PostgreSQL")
    events = [
        make_event("durable", digest(i), BASE + timedelta(seconds=i), event_id=f"d{i}")
        for i in range(20)
    ]
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        first = await Store(pool, CTX).apply(items(events), now())
    finally:
        await pool.close()
    subprocess.run([str(STACK), "pg-stop"], check=True, capture_output=True)
    subprocess.run([str(STACK), "pg-start"], check=True, capture_output=True)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        again = await Store(pool, CTX).apply(items(events), now())
        assert [o.value for o in again] == [o.value for o in first]
        assert all(o.replay for o in again)
        assert (await rows(pool))["durable"][3] == 20
    finally:
        await pool.close()


async def test_processed_records_are_pruned_after_retention(pool: asyncpg.Pool) -> None:
    store = Store(pool, CTX)
    events = [
        make_event("prune", digest(i), BASE + timedelta(seconds=i), event_id=f"p{i}")
        for i in range(30)
    ]
    await store.apply(items(events), now())
    # age 20 of them past retention, in two prune batches of 8 rows and a remainder
    await pool.execute(
        "UPDATE processed_events SET processed_at = now() - interval '8 days' WHERE id = ANY($1)",
        [f"p{i}" for i in range(20)],
    )
    assert await store.prune(older_than_seconds=7 * 86_400, batch=8) == 20
    left = await pool.fetch("SELECT id FROM processed_events ORDER BY id")
    assert sorted(r["id"] for r in left) == sorted(f"p{i}" for i in range(20, 30))
    # the tag rows are untouched, and a pruned event delivered again is superseded, not re-applied
    (again,) = await store.apply(items([events[0]]), now())
    assert summary(again).reason == "superseded"
    assert (await rows(pool))["prune"][3] == 30
