"""History against real PostgreSQL (docs/history.md): the entries the store writes with
each change, read back by the api's queries, equal the reference model's brute force
whatever the delivery order, batching and replicas; two replicas racing never write two
entries with one version nor leave a gap; release tags that move are flagged; retention
drops whole partitions; an upgrade from 0004 starts history from the live records."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.history import (
    expected_entries,
    instants,
    ocitag,
    replay_at,
    replay_intervals,
    without_recorded_at,
)
from tests.helpers.model import Model
from tests.helpers.store import CTX, items, now, race_events, summary
from tests.helpers.strategies import BASE, digest, histories, make_deletion, make_event
from worker import partitions
from worker.events import TagEvent
from worker.history import ImmutableTags, name_ref
from worker.history_reads import FIRST, NEWEST, PgHistoryReads, allow_all
from worker.migrate import migrate
from worker.outcomes import Outcome, OutcomeContext
from worker.store import Store

pytestmark = pytest.mark.integration

REPO = "docker.io/library/app"
_TRUNCATE = "TRUNCATE ocitags, processed_events, ocitag_history, ocitag_history_names"


async def all_entries(reads: PgHistoryReads, tag: str, page: int = 3) -> list[dict[str, Any]]:
    """Every entry, through the keyset pages (a small page size pages a lot)."""
    found: list[dict[str, Any]] = []
    before = NEWEST
    while True:
        rows = await reads.entries(tag, before, page)
        found += rows
        if len(rows) < page:
            return found
        last = rows[-1]
        before = (datetime.fromisoformat(last["at"].replace("Z", "+00:00")), last["version"])


async def all_tags(
    reads: PgHistoryReads, artifact: str, *, history: bool, page: int = 2
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = FIRST
    while True:
        result = await reads.tags(
            artifact, history=history, after=after, limit=page, may_read=allow_all
        )
        found += result.items
        if result.after is None:
            return found
        after = result.after


async def check_against_model(pool: asyncpg.Pool, model: Model) -> None:
    """For every tag and instant, every digest: the api's answers are the brute force."""
    reads = PgHistoryReads(pool)
    for tag_key, changes in model.changes.items():
        entries = await all_entries(reads, ocitag(tag_key))
        assert without_recorded_at(entries) == expected_entries(changes), tag_key
        for instant in instants(model):
            found = await reads.as_of(ocitag(tag_key), instant)
            expected = replay_at(tag_key, changes, instant)
            assert (None if found is None else (found.record, found.version)) == expected, (
                tag_key,
                instant,
            )
    for n in range(4):
        for history in (True, False):
            got = await all_tags(reads, digest(n), history=history)
            want = replay_intervals(model, digest(n), history=history)
            assert sorted(got, key=lambda i: (i["tag"], i["from_version"])) == want, (n, history)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories(), data=st.data())
async def test_history_answers_equal_the_brute_force_of_the_model(
    pool: asyncpg.Pool, history: list[TagEvent], data: st.DataObject
) -> None:
    """Moves and deletions with ties, duplicates, late events, id reuse and re-creation,
    shuffled, in random batches handed to two replicas in turn: history is the 200
    outcomes version by version, ?at= the replay up to each instant, the digest query
    the intervals of that replay."""
    await pool.execute(_TRUNCATE)
    order = data.draw(st.permutations(history), label="delivery order")
    replicas, model = [Store(pool, CTX), Store(pool, CTX)], Model()
    position = 0
    while position < len(order):
        size = data.draw(st.integers(1, 8), label="batch size")
        replica = replicas[data.draw(st.integers(0, 1), label="replica")]
        batch = order[position : position + size]
        outcomes = await replica.apply(items(batch, position), now())
        for event, outcome in zip(batch, outcomes, strict=True):
            assert summary(outcome) == model.deliver(event), event
        position += size
    await check_against_model(pool, model)


async def test_the_digest_question_spans_partitions(pool: asyncpg.Pool) -> None:
    """Spans that start in one partition and end in another, asked many times on the same
    connections (the function of migration 0008 keeps one plan per session, for any
    digest, and is planned again when a partition is added): the answers are the
    model's, paged, with and without history."""
    await pool.execute(_TRUNCATE)
    rng, store, model = random.Random(22), Store(pool, CTX), Model()
    events: list[TagEvent] = []
    for n in range(60):
        tag, at = rng.choice("abcde"), BASE + timedelta(seconds=n)
        if rng.random() < 0.15:
            events.append(make_deletion(tag, at, event_id=f"p{n}"))
        else:
            events.append(make_event(tag, digest(rng.randrange(4)), at, event_id=f"p{n}"))
    for position in range(0, len(events), 15):
        batch = events[position : position + 15]
        outcomes = await store.apply(items(batch, position), now())
        for event, outcome in zip(batch, outcomes, strict=True):
            assert summary(outcome) == model.deliver(event), event
        await check_against_model(pool, model)
        await partitions.maintain(pool, retention_seconds=10**6, partition_seconds=0)
    assert await pool.fetchval("SELECT count(*) FROM ocitag_history_partitions") >= 4
    await check_against_model(pool, model)


async def test_two_replicas_racing_write_one_entry_per_version_and_no_gap(
    pool: asyncpg.Pool,
) -> None:
    """Two appliers on their own connections apply interleaved halves of the same
    events (each event reaching both, as in a rebalance) in small batches at once: per
    tag the entries are versions 1..n, once each, and are exactly the 200 outcomes
    first given (not replays)."""
    await pool.execute(_TRUNCATE)
    events = race_events(seed=22, tags=6, per_tag=40)
    given_200: dict[str, dict[int, tuple[str, str]]] = defaultdict(dict)

    async def replica(order: list[TagEvent]) -> None:
        store = Store(pool, CTX)
        for start in range(0, len(order), 7):
            batch = order[start : start + 7]
            for event, outcome in zip(batch, await store.apply(items(batch), now()), strict=True):
                if outcome.status == 200 and not outcome.replay:
                    s = summary(outcome)
                    assert s.version is not None
                    assert s.version not in given_200[event.tag], "one version given twice"
                    given_200[event.tag][s.version] = (s.change or "", s.artifact or "")

    await asyncio.gather(replica(events), replica(events[::-1]))
    rows = await pool.fetch(
        "SELECT n.name, h.version, h.change FROM ocitag_history h "
        "JOIN ocitag_history_names n ON n.ref = h.tag_ref"
    )
    versions: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        versions[r["name"].rsplit(":", 1)[1]].append(r["version"])
    assert set(versions) == set(given_200)
    reads = PgHistoryReads(pool)
    for tag, seen in versions.items():
        assert sorted(seen) == list(range(1, len(seen) + 1)), tag  # no duplicate, no gap
        entries = await all_entries(reads, f"{REPO}:{tag}", page=50)
        assert {e["version"]: (e["change"], e["artifact"]) for e in entries} == given_200[tag]


def _flags(outcomes: list[Outcome]) -> list[bool]:
    return [b'"repointed":true' in o.value for o in outcomes]


async def test_release_tags_that_move_are_flagged(pool: asyncpg.Pool) -> None:
    """A semver tag moved elsewhere, and deleted then re-created elsewhere, is flagged in
    its outcome and its entry; re-pushed to the same artifact, created first, a
    non-release tag moved, or every tag with the setting emptied: not flagged."""
    await pool.execute(_TRUNCATE)
    t = [BASE + timedelta(seconds=n) for n in range(10)]
    events: list[TagEvent] = [
        make_event("v1.4.2", digest(1), t[0], event_id="c"),  # created
        make_event("v1.4.2", digest(1), t[1], event_id="same"),  # unchanged
        make_event("v1.4.2", digest(2), t[2], event_id="moved"),  # repointed
        make_deletion("v1.4.2", t[3], event_id="gone"),
        make_event("v1.4.2", digest(3), t[4], event_id="back"),  # re-created elsewhere
        make_event("1.2.3", digest(1), t[0], event_id="plain-c"),
        make_event("1.2.3", digest(4), t[1], event_id="plain-moved"),  # repointed
        make_event("latest", digest(1), t[0], event_id="l1"),
        make_event("latest", digest(2), t[1], event_id="l2"),  # not a release tag
        make_event("v2", digest(1), t[0], event_id="v2-1"),
        make_event("v2", digest(2), t[1], event_id="v2-2"),  # not x.y.z
    ]
    outcomes = await Store(pool, CTX).apply(items(events), now())
    assert _flags(outcomes) == [
        False, False, True, False, True, False, True, False, False, False, False,
    ]  # fmt: skip
    reads = PgHistoryReads(pool)
    flagged = [e["version"] for e in await all_entries(reads, f"{REPO}:v1.4.2") if e["repointed"]]
    assert flagged == [5, 3]
    # replays give the flag back byte for byte (kept as bytes, not rebuilt)
    again = await Store(pool, CTX).apply(items(events), now())
    assert [o.value for o in again] == [o.value for o in outcomes]
    assert all(o.replay for o in again)

    await pool.execute(_TRUNCATE)
    disabled = OutcomeContext(CTX.worker_source, CTX.problem_base_uri, ImmutableTags.parse(""))
    outcomes = await Store(pool, disabled).apply(items(events), now())
    assert not any(_flags(outcomes))
    assert not any(e["repointed"] for e in await all_entries(reads, f"{REPO}:v1.4.2"))


_PORTED = "localhost:5000/team/app"
_SHA512 = "sha512:" + "ab" * 64


async def _end_long_ago(pool: asyncpg.Pool, epoch: int) -> None:
    await pool.execute(
        "UPDATE ocitag_history_partitions SET ended_at = now() - interval '2 hours' "
        "WHERE epoch = $1",
        epoch,
    )


async def _drop_ended(pool: asyncpg.Pool) -> partitions.Maintenance:
    """Rotate, and drop the history partitions that ended more than an hour ago."""
    return await partitions.maintain(
        pool, retention_seconds=10**6, partition_seconds=0, history_retention_seconds=3600
    )


async def test_history_retention_drops_whole_partitions_and_keeps_live_tags(
    pool: asyncpg.Pool,
) -> None:
    """The entries of an epoch that ended more than the history retention ago go with
    their partition (with retention 0 nothing is ever dropped); a live tag whose newest
    entry went with it first gets a ``baseline`` in the current partition, the record as
    it is with its creation, so that the three questions still answer for it, through any
    number of drops; a deleted tag whose entries all went is gone (404)."""
    await pool.execute(_TRUNCATE)
    store = Store(pool, CTX)
    hour = timedelta(hours=1)
    await store.apply(
        items(
            [
                make_event("still", digest(1), BASE, event_id="s1", actor="ann"),
                make_event("still", digest(2), BASE + hour, event_id="s2", actor="bob"),
                make_event("moved", digest(1), BASE, event_id="m1"),
                make_event("gone", digest(1), BASE, event_id="g1"),
                make_deletion("gone", BASE + hour, event_id="g2"),
                # a repository with a port (the OCITag ID has two ':'), a sha512 digest
                make_event("v1", _SHA512, BASE, event_id="p1", repository=_PORTED),
            ]
        ),
        now(),
    )
    first = await pool.fetchval("SELECT epoch FROM processed_current")
    # rotate now (partition period 0), keep everything (history retention 0)
    done = await partitions.maintain(pool, retention_seconds=10**6, partition_seconds=0)
    assert done.rotated_to == first + 1 and not done.history_dropped
    await store.apply(
        items([make_event("moved", digest(3), BASE + 2 * hour, event_id="m2")]), now()
    )
    await _end_long_ago(pool, first)
    kept = await partitions.maintain(pool, retention_seconds=10**6, partition_seconds=10**6)
    assert not kept.history_dropped

    done = await _drop_ended(pool)
    assert (done.history_dropped, done.history_baselines) == ((first,), 2)
    assert await pool.fetchval("SELECT to_regclass($1)", f"ocitag_history_e{first}") is None
    reads = PgHistoryReads(pool)
    await _still_answers(reads, pool)
    # moved: its newest entry was kept, no baseline; its creation went (docs: Limits)
    assert [e["change"] for e in await all_entries(reads, f"{REPO}:moved")] == ["updated"]
    # gone: deleted, every entry dropped: no history, nothing as of any instant (404)
    assert await all_entries(reads, f"{REPO}:gone") == []
    assert await reads.as_of(f"{REPO}:gone", BASE + hour / 2) is None
    # the idempotency record of that epoch is untouched (its own retention)
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 7

    # the baseline's partition goes in turn: a new baseline, the creation carried on
    for _ in range(2):
        epoch = await pool.fetchval("SELECT epoch FROM processed_current")
        await _drop_ended(pool)  # rotates: the baseline's epoch ends now
        await _end_long_ago(pool, epoch)
        done = await _drop_ended(pool)
        assert (done.history_dropped, done.history_baselines) == ((epoch,), 2)
        await _still_answers(reads, pool)
    # one creation kept per baseline there is
    assert await pool.fetchval("SELECT count(*) FROM ocitag_history_baselines") == 2
    async with pool.acquire() as conn:
        assert await partitions.rebaseline(conn, [first]) == 0  # gone already: nothing
        current = await conn.fetchval("SELECT epoch FROM processed_current")
        with pytest.raises(ValueError, match="current"):
            await partitions.rebaseline(conn, [current])


async def _still_answers(reads: PgHistoryReads, pool: asyncpg.Pool) -> None:
    """The live tag ``still`` (created by ann at BASE, moved by bob an hour later) after
    its entries were dropped: one baseline, the record as it is, with its creation."""
    (entry,) = await all_entries(reads, f"{REPO}:still")
    assert (entry["change"], entry["version"], entry["artifact"], entry["by"]) == (
        "baseline",
        2,
        digest(2),
        "bob",
    )
    assert entry["event"]["id"] == "s2" and entry["at"] == "2026-01-01T01:00:00Z"
    as_of = await reads.as_of(f"{REPO}:still", BASE + timedelta(days=3))
    assert as_of is not None and as_of.version == 2
    assert as_of.record["artifact"] == digest(2)
    assert (as_of.record["created_by"], as_of.record["created_on"]) == (
        "ann",
        "2026-01-01T00:00:00Z",
    )
    assert await reads.as_of(f"{REPO}:still", BASE) is None  # before the kept history
    for history in (False, True):
        (interval,) = await all_tags(reads, digest(2), history=history)
        assert (interval["tag"], interval["from_version"], interval["until"]) == (
            f"{REPO}:still",
            2,
            None,
        )
    (ported,) = await all_tags(reads, _SHA512, history=False)
    assert (ported["tag"], ported["from"]) == (f"{_PORTED}:v1", "2026-01-01T00:00:00Z")
    as_of = await reads.as_of(f"{_PORTED}:v1", BASE + timedelta(days=1))
    assert as_of is not None and as_of.record["repository"] == _PORTED
    # in the current partition
    assert await pool.fetchval(
        "SELECT h.epoch = c.epoch FROM ocitag_history h, processed_current c "
        "WHERE h.event_id = 's2'::bytea"
    )


async def test_an_upgrade_from_0004_starts_history_with_a_baseline(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """A store with live records, a tombstone and a record moved since its creation,
    migrated from 0004: one ``baseline`` entry per live record, the record as it is
    (creation included, for ?at=), and the worker carries on from there."""
    await pool.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, up_to=4)
        await _with_schema_0004(
            pool,
            [
                make_event("kept", digest(1), BASE, event_id="k1", actor="ann"),
                make_event("kept", digest(2), BASE + timedelta(hours=1), event_id="k2"),
                make_event("gone", digest(1), BASE, event_id="g1"),
                make_deletion("gone", BASE + timedelta(hours=1), event_id="g2"),
            ],
        )
        await migrate(conn, up_to=5)
        baselines = await conn.fetchval("SELECT count(*) FROM ocitag_history")
        await migrate(conn)  # and what came after 0005
    finally:
        await conn.close()
    assert baselines == 1  # the live record only
    reads = PgHistoryReads(pool)
    (entry,) = await reads.entries(f"{REPO}:kept", NEWEST, 10)
    assert (entry["change"], entry["version"], entry["artifact"]) == ("baseline", 2, digest(2))
    assert entry["event"] == {"source": "https://registry.example.com/webhook", "id": "k2"}
    assert await reads.entries(f"{REPO}:gone", NEWEST, 10) == []
    as_of = await reads.as_of(f"{REPO}:kept", BASE + timedelta(hours=2))
    assert as_of is not None and as_of.version == 2
    assert (as_of.record["created_by"], as_of.record["created_on"]) == (
        "ann",
        "2026-01-01T00:00:00Z",
    )
    assert await reads.as_of(f"{REPO}:kept", BASE) is None  # before the start of history
    (interval,) = await all_tags(reads, digest(2), history=False)
    assert interval["from_version"] == 2
    # history goes on from the baseline
    store = Store(pool, CTX)
    await store.apply(
        items([make_event("kept", digest(3), BASE + timedelta(hours=3), event_id="k3")]), now()
    )
    changes = [e["change"] for e in await reads.entries(f"{REPO}:kept", NEWEST, 10)]
    assert changes == ["updated", "baseline"]


async def _with_schema_0004(pool: asyncpg.Pool, events: list[TagEvent]) -> None:
    """The rows a worker of schema 0004 left after ``events`` (the reference model's,
    written as they are: that worker wrote no history)."""
    model = Model()
    for event in events:
        model.deliver(event)
    for (repository, tag), row in model.rows.items():
        await pool.execute(
            "INSERT INTO ocitags (repository, tag, artifact, created_by, created_on, "
            "last_modified_by, last_modified_on, version, last_event_source, last_event_id, "
            "deleted_on, deleted_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            repository,
            tag,
            row.artifact,
            row.created_by,
            row.created_on,
            row.last_modified_by,
            row.last_modified_on,
            row.version,
            row.key[1],
            row.key[2],
            row.deleted_on,
            row.deleted_by,
        )


def test_the_instant_helper_covers_both_sides_of_every_change() -> None:
    model = Model()
    model.deliver(make_event("x", digest(1), BASE, event_id="1"))
    assert instants(model)[0] < BASE - timedelta(days=1)
    assert BASE - timedelta(microseconds=1) in instants(model)
    assert instants(model)[-1] >= BASE + timedelta(days=365)


async def test_the_digest_question_shows_only_tags_the_caller_may_read(
    pool: asyncpg.Pool,
) -> None:
    """``may_read`` filters the items; paging goes on past the unreadable ones."""
    await pool.execute(_TRUNCATE)
    events: list[TagEvent] = [
        make_event(tag, digest(7), BASE, event_id=f"m-{tag}") for tag in "abcdefgh"
    ]
    await Store(pool, CTX).apply(items(events), now())
    reads = PgHistoryReads(pool)
    found: list[str] = []
    after = FIRST
    while True:
        page = await reads.tags(
            digest(7), history=False, after=after, limit=2, may_read=lambda t: t[-1] in "aceg"
        )
        assert len(page.items) <= 2
        found += [i["tag"] for i in page.items]
        if page.after is None:
            break
        after = page.after
    assert sorted(found) == [f"{REPO}:{t}" for t in "aceg"]


async def test_an_upgrade_from_0006_keeps_every_entry_in_the_compact_form(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """Entries written in the layout of 0005 (a boolean ``repointed``, a text event id)
    read back the same after migration 0007, whatever their event id, in partitions of
    the same names; the worker writes on after it."""
    await pool.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    conn = await asyncpg.connect(database_url)
    uuid_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    ids = [uuid_id, "sixteen-bytes-id", "e3", uuid_id.upper()]
    try:
        await migrate(conn, up_to=6)
        epoch = await conn.fetchval("SELECT epoch FROM processed_current")
        tag = f"{REPO}:v1.0.0"
        for name in (tag, "ann", "https://registry.example.com/webhook"):
            await conn.execute(
                "INSERT INTO ocitag_history_names VALUES ($1, $2)", name_ref(name), name
            )
        for version, (change, flag, event_id) in enumerate(
            [(0, False, ids[0]), (2, True, ids[1]), (3, False, ids[2]), (4, False, ids[3])], 1
        ):
            await conn.execute(
                "INSERT INTO ocitag_history (at, recorded_at, tag_ref, by_ref, source_ref, "
                "version, epoch, change, repointed, artifact, event_id) "
                "VALUES ($1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                BASE + timedelta(hours=version),
                name_ref(tag),
                name_ref("ann"),
                name_ref("https://registry.example.com/webhook"),
                version,
                epoch,
                change,
                flag,
                bytes.fromhex(digest(min(version, 2))),
                event_id,
            )
        await conn.execute(
            "INSERT INTO ocitag_history_baselines VALUES ($1, 1, 'bob', $2)",
            name_ref(tag),
            BASE - timedelta(days=1),
        )
        await migrate(conn)
        partition = await conn.fetchval(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'ocitag_history'::regclass AND c.relname = $1",
            f"ocitag_history_e{epoch}",
        )
    finally:
        await conn.close()
    assert partition == f"ocitag_history_e{epoch}"
    reads = PgHistoryReads(pool)
    entries = await all_entries(reads, f"{REPO}:v1.0.0")
    assert [(e["version"], e["change"], e["repointed"], e["event"]["id"]) for e in entries] == [
        (4, "deleted", False, ids[3]),
        (3, "unchanged", False, ids[2]),
        (2, "updated", True, ids[1]),
        (1, "baseline", False, ids[0]),
    ]
    as_of = await reads.as_of(f"{REPO}:v1.0.0", BASE + timedelta(hours=2, minutes=30))
    assert as_of is not None and as_of.version == 2
    assert (as_of.record["created_by"], as_of.record["artifact"]) == ("bob", digest(2))
    (interval,) = await all_tags(reads, digest(2), history=True)
    assert (interval["from_version"], interval["until"]) == (2, "2026-01-01T04:00:00Z")
    store = Store(pool, CTX)
    await store.apply(
        items([make_event("v1.0.0", digest(3), BASE + timedelta(hours=5), event_id=uuid_id)]),
        now(),
    )
    # (the record itself was not written here: the worker creates it)
    (latest, *_) = await all_entries(reads, f"{REPO}:v1.0.0")
    assert (latest["version"], latest["change"], latest["event"]["id"]) == (1, "created", uuid_id)
