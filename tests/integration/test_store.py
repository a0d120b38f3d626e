"""The store against real PostgreSQL: order, idempotency, preconditions and deletions
(tombstones) under any delivery order and batching, races between appliers, durability
across a restart, pruning."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import structlog.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.model import Model, Summary
from tests.helpers.schema import scratch_database
from tests.helpers.services import STACK, Services
from tests.helpers.store import (
    CTX,
    RowState,
    items,
    model_rows,
    now,
    race_events,
    rows,
    summary,
)
from tests.helpers.strategies import BASE, digest, histories, make_deletion, make_event
from tests.helpers.wait import eventually
from worker import metrics, partitions
from worker import store as store_module
from worker.decision import decide
from worker.events import TagDeleted, TagEvent
from worker.migrate import migrate
from worker.outcomes import decision_outcome
from worker.plan import Superseded
from worker.store import Store

pytestmark = pytest.mark.integration


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories(), data=st.data())
async def test_any_order_any_batching_matches_the_model(
    pool: asyncpg.Pool, history: list[TagEvent], data: st.DataObject
) -> None:
    """Moves and deletions, shuffled, duplicated, in random batches: every outcome and
    every row (live or tombstone) is the model's."""
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
    live = {r["tag"] for r in await pool.fetch("SELECT tag FROM live_ocitags")}
    assert live == {tag for (_, tag), r in model.rows.items() if r.live}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories(max_events=40), data=st.data())
async def test_concurrent_appliers_of_random_histories_match_the_model_at_the_end(
    database_url: str, pool: asyncpg.Pool, history: list[TagEvent], data: st.DataObject
) -> None:
    """Random histories of moves and deletions split among four appliers on their own
    connections, each in random batches: without preconditions the final rows are the
    model's for the greatest-key events whatever the interleaving (live rows: the
    greatest move; tombstones: the greatest deletion)."""
    await pool.execute("TRUNCATE ocitags, processed_events")
    # an id reused with other content: which content is applied depends on who claims
    # it first, so such events are left out
    prints: dict[tuple[str, str], set[bytes]] = defaultdict(set)
    for e in history:
        prints[(e.source, e.id)].add(e.fingerprint)
    events = [e for e in history if not e.has_preconditions and len(prints[(e.source, e.id)]) == 1]
    shares: list[list[TagEvent]] = [[] for _ in range(4)]
    for e in data.draw(st.permutations(events), label="order"):
        shares[data.draw(st.integers(0, 3), label="applier")].append(e)
    sizes = [data.draw(st.integers(1, 6), label="batch size") for _ in shares]

    applied: Counter[str] = Counter()  # 200s first given (not replays), per tag

    async def applier(mine: list[TagEvent], size: int) -> None:
        store = Store(pool, CTX)
        for start in range(0, len(mine), size):
            batch = mine[start : start + size]
            for e, o in zip(batch, await store.apply(items(batch), now()), strict=True):
                applied[e.tag] += o.status == 200 and not o.replay

    await asyncio.gather(*(applier(m, n) for m, n in zip(shares, sizes, strict=True)))
    final = await rows(pool)
    for tag in {e.tag for e in events}:
        best = max((e for e in events if e.tag == tag), key=lambda e: e.order_key)
        artifact, actor, when, version, deleted_on, deleted_by, _, _ = final[tag]
        assert (actor, when) == (best.actor, best.time), tag
        assert version == applied[tag], tag  # each applied event counted once, 404s none
        if isinstance(best, TagDeleted):
            assert (deleted_on, deleted_by) == (best.time, best.actor), tag
        else:
            assert deleted_on is None and artifact == best.artifact, tag


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
    # counted by the change its outcome says (the rejection has none)
    assert [o.change for o in out2[:2]] == [o.change for o in out1] == ["created", None]
    assert summary(out2[2]) == summary(out2[3]) and summary(out2[2]).reason == "id-reused"
    # a redelivery of the same record (same offset) gets the very same bytes
    (again,) = await store.apply(items([reused], first_offset=2), now())
    assert again.value == out2[2].value
    assert (await rows(pool))["v1"][3] == 1


async def test_a_late_events_409_is_kept_compact_and_replays_byte_identical(
    pool: asyncpg.Pool,
) -> None:
    """Migration 0006: a superseded event's record keeps the newer key, the content mode
    and the record it came in, not its outcome's bytes. Redelivered at other offsets,
    after the tag moved on, to a worker with another problem base URI, it gets its first
    409 byte for byte."""
    store = Store(pool, CTX)
    newer = make_event("late", digest(1), BASE + timedelta(seconds=10), event_id="new")
    late = make_event("late", digest(2), BASE, event_id="old")
    late_deletion = make_deletion("late", BASE + timedelta(seconds=1), event_id="old-del")
    first = await store.apply(items([newer, late, late_deletion]), now())
    assert [o.status for o in first] == [200, 409, 409]
    kept = await pool.fetch(
        "SELECT outcome, change, superseded, pg_column_size(p.*) AS size"
        " FROM processed_events p WHERE status = 409"
    )
    assert [(r["outcome"], r["change"]) for r in kept] == [(None, None)] * 2
    held = {Superseded.from_bytes(r["superseded"]) for r in kept}
    assert {(h.on, h.source, h.id, h.live, h.binary) for h in held} == {
        (newer.time, newer.source, "new", True, False)
    }
    assert {h.instance for h in held} == {
        "urn:kafka:ocitag.events:0:1", "urn:kafka:ocitag.events:0:2",
    }  # fmt: skip
    assert all(r["size"] < len(first[1].value) / 2 for r in kept)
    moved_on = make_event("late", digest(3), BASE + timedelta(seconds=20), event_id="newest")
    await store.apply(items([moved_on], first_offset=10), now())
    elsewhere = Store(pool, replace(CTX, problem_base_uri="https://example.com/problems/"))
    again = await elsewhere.apply(items([late, late_deletion], first_offset=50), now())
    assert [o.value for o in again] == [o.value for o in first[1:]]
    assert all(o.replay and o.status == 409 for o in again)


async def test_a_repeated_change_gets_the_state_record_of_the_tag_as_the_batch_leaves_it(
    pool: asyncpg.Pool,
) -> None:
    """The state topic keeps the last record per key: a duplicate that follows a later
    change, in the same batch or a later one, must show that later change, and a
    deletion's duplicate after a re-creation the live record."""
    store = Store(pool, CTX)
    first = make_event("v1", digest(1), BASE, event_id="e1")
    later = make_event("v1", digest(2), BASE + timedelta(seconds=1), event_id="e2")
    gone = make_deletion("v1", BASE + timedelta(seconds=2), event_id="e3")
    back = make_event("v1", digest(3), BASE + timedelta(seconds=3), event_id="e4")
    out = await store.apply(items([first, later, first]), now())
    assert [o.state and o.state.version for o in out] == [1, 2, 2]
    assert out[2].state == out[1].state
    out = await store.apply(items([gone, first]), now())
    assert [(o.state.value, o.state.version) for o in out if o.state] == [(None, 3), (None, 3)]
    out = await store.apply(items([back, gone, first]), now())
    assert [o.state and o.state.version for o in out] == [4, 4, 4]
    assert out[1].state == out[0].state and out[0].state and out[0].state.value


async def test_one_batch_costs_a_bounded_number_of_round_trips(pool: asyncpg.Pool) -> None:
    """The statements one connection runs for a batch of 500 events on 50 tags (moves,
    deletions of live and of deleted tags, re-creations, a few never-seen tags)."""
    events: list[TagEvent] = [
        make_deletion(f"t{i % 60}", BASE + timedelta(seconds=i))
        if i % 7 == 3 or i % 60 >= 50
        else make_event(f"t{i % 60}", digest(i), BASE + timedelta(seconds=i))
        for i in range(1600)
    ]
    calls: Counter[str] = Counter()
    async with pool.acquire() as conn:
        store = Store(_SinglePool(conn), CTX)  # type: ignore[arg-type]
        # warms asyncpg's type introspection, and crosses the first rung of the store's
        # analyses (worker/statistics.py), done before the statements are counted
        await store.apply(items(events[:1100]), now())
        await store.statistics.settled()
        conn.add_query_logger(lambda q: calls.update([" ".join(q.query.split()[:4])]))
        await store.apply(items(events[1100:] + events[:10]), now())
        # query loggers are called soon after the statements, not during
        await eventually(lambda: sum(calls.values()) >= 4, timeout=5)
        await asyncio.sleep(0.1)  # one more would show by now
        # BEGIN, the lookup (current epoch, processed, tags), the write (tags, records,
        # history), COMMIT
        assert sum(calls.values()) == 4, calls


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
    events: list[TagEvent],
    results: list[list[tuple[str, bytes, bool]]],
    final: dict[str, RowState],
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
        artifact, actor, when, version, deleted_on, _, _, _ = final[tag]
        assert (actor, when) == (best.actor, best.time), tag  # no lost update
        if isinstance(best, TagDeleted):
            assert deleted_on == best.time, tag
        else:
            assert (deleted_on, artifact) == (None, best.artifact), tag
        assert version == applied_per_tag[tag], tag  # every 200 counted once, 404s none


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


async def test_processed_records_expire_by_dropping_their_partition(pool: asyncpg.Pool) -> None:
    """Rotation moves new records to the next partition; a partition that ended more than
    the retention ago is dropped whole; an event whose record went with it is decided
    again (superseded), and one recorded in the live partition still replays."""
    store = Store(pool, CTX)
    old = [
        make_event("prune", digest(i), BASE + timedelta(seconds=i), event_id=f"p{i}")
        for i in range(20)
    ]
    first = await store.apply(items(old), now())
    before = await pool.fetchval("SELECT epoch FROM processed_current")
    # the current partition began long ago: this maintenance rotates to the next one
    await pool.execute(
        "UPDATE processed_partitions SET started_at = now() - interval '2 days' WHERE epoch = $1",
        before,
    )
    done = await partitions.maintain(pool, retention_seconds=7 * 86_400, partition_seconds=86_400)
    assert done.rotated_to == before + 1 and not done.dropped
    assert await pool.fetchval("SELECT epoch FROM processed_current") == before + 1
    recent = [
        make_event("prune", digest(100 + i), BASE + timedelta(seconds=100 + i), event_id=f"q{i}")
        for i in range(10)
    ]
    await store.apply(items(recent), now())
    # the old partition ended 8 days ago: dropped, the new one kept
    await pool.execute(
        "UPDATE processed_partitions SET ended_at = now() - interval '8 days' WHERE epoch = $1",
        before,
    )
    done = await partitions.maintain(pool, retention_seconds=7 * 86_400, partition_seconds=86_400)
    assert done.dropped == (before,) and done.rotated_to is None
    assert await pool.fetchval("SELECT to_regclass($1)", partitions.partition_name(before)) is None
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 10
    # a dropped event delivered again is superseded, not re-applied; a kept one replays
    (again,) = await store.apply(items([old[0]]), now())
    assert summary(again).reason == "superseded" and again.value != first[0].value
    (replay,) = await store.apply(items([recent[0]], first_offset=50), now())
    assert replay.replay
    assert (await rows(pool))["prune"][3] == 30


async def _lock_waiters(pool: asyncpg.Pool, count: int) -> None:
    query = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with asyncio.timeout(10):
        while await pool.fetchval(query) < count:
            await asyncio.sleep(0.01)


async def test_a_redelivery_racing_an_applier_and_a_rotation_replays_its_outcome(
    pool: asyncpg.Pool,
) -> None:
    """Applier A holds the epoch FOR SHARE with its record not yet committed, a rotation
    waits for A, and a redelivery of A's event (B) runs meanwhile and waits too. When A
    and the rotation commit, B replays A's outcome byte for byte: the event is applied
    and recorded once, in A's epoch, and the rotation went through."""
    store = Store(pool, CTX)
    event = make_event("rotation", digest(1), BASE, event_id="rotation-1")
    epoch = await pool.fetchval("SELECT epoch FROM processed_current")
    async with pool.acquire() as a, pool.acquire() as r:
        await partitions.ensure_partition(r, epoch + 1)
        sources = store_module._Sources(CTX.worker_source, CTX.problem_base_uri)
        await sources.load(a)
        transaction = a.transaction()
        await transaction.start()
        (first,) = (await store_module._apply(a, CTX, sources, items([event]), now())).outcomes
        rotating = asyncio.create_task(partitions.rotate(r, epoch))
        await _lock_waiters(pool, 1)
        redelivered = asyncio.create_task(store.apply(items([event]), now()))
        await _lock_waiters(pool, 2)
        await transaction.commit()
        await asyncio.wait_for(rotating, 10)
        (second,) = await asyncio.wait_for(redelivered, 10)
    assert await pool.fetchval("SELECT epoch FROM processed_current") == epoch + 1
    assert second.replay and second.value == first.value
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 1


async def test_a_lookup_whose_snapshot_predates_a_rotation_it_waited_for_is_read_again(
    pool: asyncpg.Pool,
) -> None:
    """The lookup reads the epoch FOR SHARE in the statement that reads the record: its
    snapshot is taken before its lock is granted. Staged: a rotation holds the epoch's
    row, the redelivery's lookup starts and waits for it, the first applier's record of
    the event commits (in the old epoch), then the rotation. The lookup's lock is on the
    new epoch while its snapshot misses that record: the store must read again and
    replay, not apply the event a second time in the new epoch. (Real appliers commit
    before the rotation gets its lock; a lookup whose snapshot is taken just before that
    commit and whose lock is requested just after the rotation's is in this very state,
    in a window too short to hit on purpose, so the record is put back by hand here.)"""
    store = Store(pool, CTX)
    event = make_event("snapshot", digest(1), BASE, event_id="snapshot-1")
    (first,) = await store.apply(items([event]), now())
    epoch = await pool.fetchval("SELECT epoch FROM processed_current")
    record = await pool.fetchrow("DELETE FROM processed_events RETURNING *")
    assert record is not None
    async with pool.acquire() as r:
        await partitions.ensure_partition(r, epoch + 1)
        rotation = r.transaction()
        await rotation.start()
        await r.execute("UPDATE processed_current SET epoch = $1", epoch + 1)
        redelivered = asyncio.create_task(store.apply(items([event], first_offset=9), now()))
        await _lock_waiters(pool, 1)
        columns = ", ".join(record.keys())
        values = ", ".join(f"${i}" for i in range(1, len(record) + 1))
        await pool.execute(
            f"INSERT INTO processed_events ({columns}) VALUES ({values})", *record.values()
        )
        await rotation.commit()
        (second,) = await asyncio.wait_for(redelivered, 10)
    assert second.replay and second.value == first.value
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 1
    assert (await rows(pool))["snapshot"][3] == 1


async def test_records_of_the_old_schema_replay_after_migration(services: Services) -> None:
    """Migration 0004 converts the records of 0001 (source, id, the outcome's bytes):
    their events still replay byte for byte, and ids reused are still 409."""
    async with scratch_database(services.database_url, "old_schema") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, up_to=1)
            event = make_event("old", digest(1), BASE, event_id="o1")
            first = decision_outcome(CTX, items([event])[0], decide(None, event), now())
            await conn.execute(
                "INSERT INTO processed_events (source, id, fingerprint, processed_at, status,"
                " outcome_key, outcome) VALUES ($1, $2, $3, now(), 200, $4, $5)",
                event.source, event.id, event.fingerprint, first.key, first.value,
            )  # fmt: skip
            await migrate(conn)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            store = Store(pool, CTX)
            reused = make_event("old", digest(2), BASE, event_id="o1")
            again, other = await store.apply(items([event, reused], first_offset=10), now())
            assert again.replay and again.value == first.value and again.key == first.key
            assert summary(other).reason == "id-reused"
        finally:
            await pool.close()


async def test_records_of_before_0006_replay_after_it(services: Services) -> None:
    """Migration 0006 makes ``outcome_sources`` rows (source, problem base) pairs: a 200
    rebuilt from a record written before it (its source row has no base) and a 409 kept
    as bytes still replay byte for byte, and a new late event's 409 is kept compact."""
    async with scratch_database(services.database_url, "before_0006") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, up_to=5)
            moved = make_event("old7", digest(1), BASE + timedelta(seconds=5), event_id="m1")
            late = make_event("old7", digest(2), BASE, event_id="l1")
            (first_item, late_item) = items([moved, late])
            created = decide(None, moved)
            superseded = decide(created.recorded, late)
            at = now()
            created_outcome = decision_outcome(CTX, first_item, created, at)
            late_outcome = decision_outcome(CTX, late_item, superseded, at)
            ref = await conn.fetchval(
                "INSERT INTO outcome_sources (source) VALUES ($1) RETURNING id", CTX.worker_source
            )
            await conn.execute(  # 0004's compact 200, and a 409 as its bytes
                "INSERT INTO processed_events (key, epoch, fingerprint, processed_at, status,"
                " change, version, source_ref, outcome_key, outcome) VALUES"
                " ($1, 1, $2, $3, 200, 1, 1, $4, NULL, NULL),"
                " ($5, 1, $6, $3, 409, NULL, NULL, NULL, $7, $8)",
                store_module.event_key(first_item.key), moved.fingerprint[:16], at, ref,
                store_module.event_key(late_item.key), late.fingerprint[:16],
                late_outcome.key, late_outcome.value,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO ocitags (repository, tag, artifact, created_by, created_on,"
                " last_modified_by, last_modified_on, version, last_event_source,"
                " last_event_id, recorded_at) VALUES ($1, $2, $3, $4, $5, $4, $5, 1, $6, $7, $8)",
                moved.repository, moved.tag, moved.artifact, moved.actor, moved.time,
                moved.source, moved.id, at,
            )  # fmt: skip
            await migrate(conn)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            store = Store(pool, CTX)
            later = make_event("old7", digest(3), BASE + timedelta(seconds=1), event_id="l2")
            again, late_again, new_late = await store.apply(
                items([moved, late, later], first_offset=10), now()
            )
            assert (again.value, again.replay) == (created_outcome.value, True)
            assert (late_again.value, late_again.replay) == (late_outcome.value, True)
            assert summary(new_late).reason == "superseded" and not new_late.replay
            kept = await pool.fetchval(
                "SELECT superseded IS NOT NULL AND outcome IS NULL FROM processed_events"
                " WHERE key = $1",
                store_module.event_key((later.source, later.id)),
            )
            assert kept
            (replayed,) = await store.apply(items([later], first_offset=20), now())
            assert replayed.value == new_late.value and replayed.replay
        finally:
            await pool.close()


async def test_tombstones_are_pruned_after_retention_and_live_rows_never(
    pool: asyncpg.Pool,
) -> None:
    store = Store(pool, CTX)
    events: list[TagEvent] = [
        make_event("kept", digest(1), BASE, event_id="k1"),
        make_event("gone", digest(1), BASE, event_id="g1"),
        make_deletion("gone", BASE + timedelta(seconds=1), event_id="g2"),
        *(make_deletion(f"old{i}", BASE, event_id=f"o{i}") for i in range(10)),
    ]
    # every row recorded long ago except "fresh": retention counts from when a row was
    # written, not from the event's time
    await store.apply(items(events), now() - timedelta(days=31))
    fresh = make_deletion("fresh", BASE + timedelta(seconds=1), event_id="f1")  # 404, v0
    await store.apply(items([fresh]), now())
    assert await store.prune_tombstones(older_than_seconds=30 * 86_400, batch=4) == 11
    assert sorted(r["tag"] for r in await pool.fetch("SELECT tag FROM ocitags")) == [
        "fresh",
        "kept",
    ]
    # what pruning trades: the forgotten deletion no longer keeps an older move out; a
    # pruned row is no loss (worker/regressions.py)
    with structlog.testing.capture_logs() as logs:
        (late,) = await store.apply(
            items([make_event("gone", digest(2), BASE, event_id="late")]), now()
        )
    assert summary(late) == Summary(200, "created", 1, digest(2))
    assert not [e for e in logs if e["event"] == "store_regressed"]


async def test_a_row_read_older_than_this_store_wrote_it_is_said_once(pool: asyncpg.Pool) -> None:
    """A failover lost the store's last write (worker/regressions.py): the next batch of
    the tag reads an older row; one ``store_regressed`` line and one count, not again."""
    store = Store(pool, CTX)
    tag = f"regress-{random.randrange(10**9)}"

    def moved(n: int) -> TagEvent:
        return make_event(tag, digest(n), BASE + timedelta(seconds=n))

    await store.apply(items([moved(1), moved(2)]), now())  # version 2
    await pool.execute(  # the row as the lost transaction found it
        "UPDATE ocitags SET version = 1, artifact = $2, last_modified_on = $3, "
        "last_event_id = 'lost' WHERE tag = $1",
        tag,
        digest(1),
        BASE + timedelta(seconds=1),
    )
    before = metrics.STORE_REGRESSIONS._value.get()
    with structlog.testing.capture_logs() as logs:
        await store.apply(items([moved(3)]), now())
        await store.apply(items([moved(4)]), now())
    said = [entry for entry in logs if entry["event"] == "store_regressed"]
    assert [(e["ocitag_id"], e["written_version"], e["stored_version"]) for e in said] == [
        (f"docker.io/library/app:{tag}", 2, 1)
    ], said
    assert said[0]["log_level"] == "error"
    assert metrics.STORE_REGRESSIONS._value.get() == before + 1


async def test_a_lost_creation_and_deletion_is_seen_until_the_tombstone_could_be_pruned(
    pool: asyncpg.Pool,
) -> None:
    """A failover lost a tag's creation and its deletion (both acknowledged); the tag is
    created again and would reuse version 1 unseen. While the tombstone cannot have been
    pruned (the pruner leaves it), its row missing is a loss; once the pruner may have
    taken it (and does), it is not (worker/regressions.py)."""
    day = timedelta(days=1)
    for written_ago, pruned in ((timedelta(hours=1), 0), (2 * day, 1)):
        store = Store(pool, CTX, tombstone_retention=day)
        tag = f"regress-gone-{random.randrange(10**9)}"
        created = make_event(tag, digest(1), BASE + timedelta(seconds=1))
        deletion = make_deletion(tag, BASE + timedelta(seconds=2))
        await store.apply(items([created, deletion]), now() - written_ago)
        await store.prune_tombstones(older_than_seconds=int(day.total_seconds()))
        left = await pool.fetchval("SELECT count(*) FROM ocitags WHERE tag = $1", tag)
        assert left == 1 - pruned, written_ago
        await pool.execute("DELETE FROM ocitags WHERE tag = $1", tag)  # lost (if not pruned)
        before = metrics.STORE_REGRESSIONS._value.get()
        with structlog.testing.capture_logs() as logs:
            again = make_event(tag, digest(3), BASE + timedelta(seconds=3))
            (outcome,) = await store.apply(items([again]), now())
        said = [
            (e["ocitag_id"], e["written_version"], e["stored_version"])
            for e in logs
            if e["event"] == "store_regressed"
        ]
        assert said == [(f"docker.io/library/app:{tag}", 2, None)] * (1 - pruned), written_ago
        assert metrics.STORE_REGRESSIONS._value.get() == before + 1 - pruned
        assert summary(outcome) == Summary(200, "created", 1, digest(3))


async def test_names_lost_with_the_writes_are_sent_again_once_the_loss_is_seen(
    pool: asyncpg.Pool,
) -> None:
    """A failover that lost a tag's row lost its history name too, which the store
    remembered as stored: once the loss is seen the names are sent again, so the tag's
    entries (joined to their names by every read) come back."""
    store = Store(pool, CTX)
    tag = f"lostname-{random.randrange(10**9)}"
    name = f"docker.io/library/app:{tag}"

    def moved(n: int) -> TagEvent:
        return make_event(tag, digest(n), BASE + timedelta(seconds=n))

    await store.apply(items([moved(1)]), now())
    await pool.execute("DELETE FROM ocitags WHERE tag = $1", tag)  # the lost transaction
    await pool.execute("DELETE FROM ocitag_history_names WHERE name = $1", name)
    with structlog.testing.capture_logs() as logs:
        await store.apply(items([moved(2)]), now())  # reads no row: the loss is seen
    assert [e["ocitag_id"] for e in logs if e["event"] == "store_regressed"] == [name]
    await store.apply(items([moved(3)]), now())
    assert await pool.fetchval("SELECT count(*) FROM ocitag_history_names WHERE name = $1", name)
