"""The store's statements keep using their indexes as a fresh store grows.

A prepared statement whose generic plan is cached while the tables are empty and never
analysed keeps that plan (sequential scans of the idempotency record and the tag table,
one or two per batch) as the tables grow, until the first autoanalyze: on a new
deployment p99 goes from tens of milliseconds to over ten seconds, and so on every new
partition of the record. The product's pool plans these statements for their parameters
each time (worker/db.py); these tests hold that on a fresh database.

Autovacuum is switched off for the tables under test: an autoanalyze arriving during the
run would re-plan the statements and hide the fault, and a store must not depend on when
autovacuum comes by. While a table spans a few pages a sequential scan is its cheapest
plan and PostgreSQL rightly takes it, so each phase first grows the tables (warm-up),
then counts the scans of the next batches, which must all use the indexes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.helpers.store import CTX, items, now
from tests.helpers.strategies import BASE, digest, make_event
from worker import partitions
from worker.db import open_pool
from worker.history_reads import FIRST, PgHistoryReads, allow_all
from worker.migrate import available
from worker.statistics import Statistics
from worker.store import Store

pytestmark = pytest.mark.integration

PER_BATCH = 8
WARM_UP = 400  # batches that grow the tables past where a scan is their cheapest plan
COUNTED = 400  # batches whose scans are counted

_SEQ_SCANS = """
SELECT relname, seq_scan FROM pg_stat_user_tables
WHERE relname = 'ocitags' OR relname LIKE 'processed_events_e%'
"""
# index tuples read through the (tag_ref, at) index, every partition's
_TAG_INDEX_READS = """
SELECT coalesce(sum(s.idx_tup_read), 0) FROM pg_stat_user_indexes s
JOIN pg_inherits i ON i.inhrelid = s.indexrelid
WHERE i.inhparent = 'ocitag_history_tag_at'::regclass
"""
_HISTORY_SEQ_SCANS = """
SELECT relname, seq_scan FROM pg_stat_user_tables WHERE relname LIKE 'ocitag_history%'
"""
_TAG_KEY_READS = "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'ocitags_pkey'"


# the store's statements (migrations 0009 and 0010; the write's arguments as 0011 made
# them): planned once per session, pinned onto the indexes
_STORE_FUNCTIONS = (
    "ocitag_store_lookup(bytea[], text[], text[])",
    "ocitag_store_write(ocitag_store_tag_in[], timestamptz, integer, ocitag_store_record_in[], "
    "bigint[], text[], ocitag_store_entry_in[])",
)
_PINS = ("enable_seqscan", "enable_hashjoin", "enable_mergejoin")


class _Run:
    """Batches of new tags, and a few moves of earlier ones, through the product's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.store = Store(pool, CTX)
        self.batches = 0

    async def batches_of_new_tags(self, count: int) -> None:
        for _ in range(count):
            n = self.batches
            events = [
                make_event(f"t{n}-{i}", digest(n), BASE + timedelta(seconds=n), event_id=f"{n}-{i}")
                for i in range(PER_BATCH - 2)
            ]
            # moves of tags made earlier: the tag table is read for existing rows too
            events += [
                make_event(
                    f"t{n // 2}-{i}",
                    digest(n + 1),
                    BASE + timedelta(seconds=n),
                    event_id=f"m{n}-{i}",
                )
                for i in range(2)
            ]
            await self.store.apply(items(events), now())
            self.batches += 1

    async def seq_scans(self, admin: asyncpg.Connection, query: str = _SEQ_SCANS) -> dict[str, int]:
        """Each table's sequential scans so far (analyses done, the pool's pending counts
        flushed first)."""
        await self._counted(admin)
        return {r["relname"]: r["seq_scan"] for r in await admin.fetch(query)}

    async def tag_key_reads(self, admin: asyncpg.Connection) -> int:
        """The entries read so far from the tags' primary-key index."""
        await self._counted(admin)
        return int(await admin.fetchval(_TAG_KEY_READS))

    async def _counted(self, admin: asyncpg.Connection) -> None:
        """The statistics settled and the pool's pending counts flushed, and ``admin``
        about to read them afresh."""
        await self.store.statistics.settled()
        for _ in range(self.pool.get_size()):
            async with self.pool.acquire() as conn:
                # counts are flushed when the statement ends, before its answer
                await conn.execute("SELECT pg_stat_force_next_flush()")
        await admin.execute("SELECT pg_stat_clear_snapshot()")


async def _no_autovacuum(admin: asyncpg.Connection) -> None:
    tables = await admin.fetch(
        "SELECT relname FROM pg_class WHERE relkind = 'r' "
        "AND (relname = 'ocitags' OR relname LIKE 'processed_events_e%' "
        "OR relname LIKE 'ocitag_history%')"
    )
    for t in tables:
        await admin.execute(f"ALTER TABLE {t['relname']} SET (autovacuum_enabled = off)")


def _grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: n - before.get(name, 0) for name, n in after.items() if n > before.get(name, 0)}


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        await _no_autovacuum(conn)
        yield conn
    finally:
        await conn.close()


async def _product_pool(url: str) -> asyncpg.Pool:
    # the worker's own pool: its session settings are what is under test
    return await open_pool(url, min_size=2, max_size=2, command_timeout=30, idle_in_transaction=60)


@pytest.fixture
async def run(database_url: str, admin: asyncpg.Connection) -> AsyncIterator[_Run]:
    pool = await _product_pool(database_url)
    try:
        yield _Run(pool)
    finally:
        await pool.close()


async def test_a_growing_fresh_store_is_read_through_its_indexes(
    run: _Run, admin: asyncpg.Connection
) -> None:
    await run.batches_of_new_tags(WARM_UP)
    before = await run.seq_scans(admin)
    await run.batches_of_new_tags(COUNTED)
    after = await run.seq_scans(admin)
    assert await admin.fetchval("SELECT count(*) FROM ocitags") == (WARM_UP + COUNTED) * 6
    assert _grown(before, after) == {}, (
        f"sequential scans in {COUNTED} batches after {WARM_UP}: {_grown(before, after)}"
    )


async def test_a_new_partition_of_the_record_is_read_through_its_index(
    run: _Run, admin: asyncpg.Connection
) -> None:
    """After a rotation new records go to an empty, never analysed partition, which every
    lookup reads beside the old one."""
    await run.batches_of_new_tags(WARM_UP)
    epoch = await admin.fetchval("SELECT epoch FROM processed_current")
    await partitions.ensure_partition(admin, epoch + 1)
    await partitions.rotate(admin, epoch)
    await _no_autovacuum(admin)
    await run.batches_of_new_tags(WARM_UP)
    before = await run.seq_scans(admin)
    await run.batches_of_new_tags(COUNTED)
    after = await run.seq_scans(admin)
    new = partitions.partition_name(epoch + 1)
    assert await admin.fetchval(f"SELECT count(*) FROM {new}") == (WARM_UP + COUNTED) * PER_BATCH
    assert _grown(before, after) == {}, (
        f"sequential scans in {COUNTED} batches after the rotation: {_grown(before, after)}"
    )


async def test_the_digest_question_first_asked_on_an_empty_history_reads_its_indexes_later(
    run: _Run, admin: asyncpg.Connection, database_url: str
) -> None:
    """Migration 0008's function keeps one generic plan per session, made at its first
    call: asked while the history is empty (the api's first hour), that plan must still
    read the history through its indexes once the history has grown."""
    # one session, as the worker's pool sets it up: every question goes through it
    pool = await open_pool(database_url, 1, 1, command_timeout=30, idle_in_transaction=60)
    reads = PgHistoryReads(pool)

    async def ask(n: int) -> int:
        page = await reads.tags(digest(n), history=True, after=FIRST, limit=20, may_read=allow_all)
        return len(page.items)

    try:
        assert await ask(0) == 0  # planned now, on the empty history
        await run.batches_of_new_tags(WARM_UP)
        await _no_autovacuum(admin)
        before = await run.seq_scans(admin, _HISTORY_SEQ_SCANS)
        tag_reads = await admin.fetchval(_TAG_INDEX_READS)
        found = [await ask(n) for n in range(0, WARM_UP, 8)]
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_stat_force_next_flush()")
        after = await run.seq_scans(admin, _HISTORY_SEQ_SCANS)
        tag_reads = await admin.fetchval(_TAG_INDEX_READS) - tag_reads
    finally:
        await pool.close()
    assert await admin.fetchval("SELECT count(*) FROM ocitag_history") >= WARM_UP * PER_BATCH
    assert all(found), found  # each digest n was made current by batch n (6 tags)
    assert _grown(before, after) == {}, f"sequential scans of the history: {_grown(before, after)}"
    # nor walked by tag through the whole history (a generic plan's other bad choice): the
    # tag index serves only each interval's end, a few entries per row found
    entries = await admin.fetchval("SELECT count(*) FROM ocitag_history")
    assert tag_reads <= 10 * sum(found) + len(found), (tag_reads, sum(found), entries)


async def test_a_role_that_does_not_own_the_tables_is_told_its_plans_wait_for_autovacuum(
    database_url: str, admin: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL analyses only for a table's owner and warns otherwise: the worker says
    so once per table instead of counting an analysis that did not happen."""
    role = f"dml_{uuid.uuid4().hex[:8]}"
    await admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await admin.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
        await admin.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        parts = urlsplit(database_url)
        as_role = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
        pool = await _product_pool(as_role)
        try:
            run = _Run(pool)
            await run.batches_of_new_tags(130)  # 1,040 records: past the first rung
            await run.store.statistics.settled()
            assert run.store.statistics.skipped == {"processed_events_e1", "ocitags"}
            assert run.store.statistics.analyses == 0
        finally:
            await pool.close()
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
    assert capsys.readouterr().out.count("analyse_skipped") == 2


async def _not_analysed(table: str) -> str | None:
    """An analysis that does not happen (as for a role that does not own the tables): the
    plans made first are kept until autovacuum comes by, which these tests switch off."""
    return None


async def _scans_after_growing_with_plans_made_empty(
    database_url: str, admin: asyncpg.Connection
) -> dict[str, int]:
    """The store's sequential scans in 50 batches after 250, through one session whose
    plans of the store's statements were made on the empty store (its first batch) and
    never made again (no analysis, no autovacuum)."""
    pool = await open_pool(database_url, 1, 1, command_timeout=30, idle_in_transaction=60)
    try:
        run = _Run(pool)
        run.store.statistics = Statistics(_not_analysed)
        await run.batches_of_new_tags(1)  # planned now, on the empty store
        await run.batches_of_new_tags(250)
        before = await run.seq_scans(admin)
        await run.batches_of_new_tags(50)
        after = await run.seq_scans(admin)
    finally:
        await pool.close()
    assert await admin.fetchval("SELECT count(*) FROM ocitags") == 301 * 6
    return _grown(before, after)


async def test_the_store_plans_made_on_an_empty_store_read_its_indexes_as_it_grows(
    database_url: str, admin: asyncpg.Connection
) -> None:
    """Migration 0009's functions keep one generic plan per session, made at their first
    call: made while the store is empty, it must read the grown tables through their
    indexes (the record's key, the tags' key), with no analysis to plan it again."""
    assert await _scans_after_growing_with_plans_made_empty(database_url, admin) == {}


async def test_without_their_pins_the_store_plans_made_empty_would_scan(
    database_url: str, admin: asyncpg.Connection
) -> None:
    """The control of the test above: with the functions' planner settings removed, the
    generic plan of the write made on the empty store scans the whole tag table once a
    batch (a hash join on the guard's columns: the first-hour defect, back), and the
    counting above sees it. (0009's lookup scanned it too; since 0010 each of its keys is
    a LATERAL probe, which has no other plan. The record's plan happens to keep its index
    on this PostgreSQL even so; its pin costs nothing.)"""
    for function in _STORE_FUNCTIONS:
        for setting in _PINS:
            await admin.execute(f"ALTER FUNCTION {function} RESET {setting}")
    scans = await _scans_after_growing_with_plans_made_empty(database_url, admin)
    assert scans.get("ocitags", 0) >= 50, scans


GROWN_TO = 10_000  # tags added after the plans were made: what a walk of the index reads
ONE_KEY_BATCHES = 12  # batches of one event each, every other one a move of a grown tag
# copies of the first tag's row under other names: the tag table grown fast (a few
# hundred milliseconds), without the store's plans being made again
_GROW_TAGS = """
INSERT INTO ocitags (repository, tag, artifact, created_by, created_on, last_modified_by,
                     last_modified_on, version, last_event_source, last_event_id, deleted_on,
                     deleted_by, recorded_at)
SELECT s.repository, 'grown' || i, s.artifact, s.created_by, s.created_on, s.last_modified_by,
       s.last_modified_on, s.version, s.last_event_source, 'grown' || i, s.deleted_on,
       s.deleted_by, s.recorded_at
FROM ocitags s CROSS JOIN generate_series(1, $1::integer) AS i WHERE s.tag = 'first'
"""


async def _tag_key_reads_of_batches_of_one_after_an_analyse_at_one_row(
    database_url: str, admin: asyncpg.Connection
) -> list[int]:
    """The entries of the tags' primary key read by each batch of one event, through one
    session whose store plans were made while the tag table held one row and had been
    analysed so (a fresh store after autovacuum's or the worker's first analyse), and
    kept while the table grew to ``GROWN_TO`` tags (no analysis since)."""
    pool = await open_pool(database_url, 1, 1, command_timeout=30, idle_in_transaction=60)
    try:
        run = _Run(pool)
        run.store.statistics = Statistics(_not_analysed)
        await run.store.apply(items([make_event("first", digest(0), BASE)]), now())
        await admin.execute("ANALYZE ocitags")
        # planned now (the analyse invalidated the plans made on the empty store)
        await run.store.apply(items([make_event("second", digest(0), BASE)]), now())
        await admin.execute(_GROW_TAGS, GROWN_TO)
        reads = []
        for n in range(ONE_KEY_BATCHES):
            when = BASE + timedelta(seconds=n + 1)
            # a move of an existing tag (the write's UPDATE) or a new tag (its INSERT)
            tag = f"grown{n + 1}" if n % 2 else f"new{n}"
            before = await run.tag_key_reads(admin)
            await run.store.apply(items([make_event(tag, digest(n + 1), when)]), now())
            reads.append(await run.tag_key_reads(admin) - before)
    finally:
        await pool.close()
    tags = await admin.fetchval("SELECT count(*) FROM ocitags")
    assert tags == GROWN_TO + 2 + ONE_KEY_BATCHES // 2
    assert (
        await admin.fetchval("SELECT count(*) FROM ocitags WHERE tag LIKE 'grown%' AND version = 2")
        == ONE_KEY_BATCHES // 2
    ), "every move applied"
    return reads


async def test_a_batch_of_one_tag_probes_the_tag_key_with_plans_made_at_one_row(
    database_url: str, admin: asyncpg.Connection
) -> None:
    """Migration 0010: plans made while the tag table held one row and was analysed so
    (which puts the table outside a join to the batch's keys, its whole key index walked
    per batch) read each tag of a batch by a probe of the key, in the lookup and in the
    write, once the table has grown: a few entries a batch, not the table's size (2 for a
    move here, the lookup's probe and the UPDATE's; 0 for a new tag, whose probe finds
    nothing and whose INSERT's conflict check is not counted as a read)."""
    reads = await _tag_key_reads_of_batches_of_one_after_an_analyse_at_one_row(database_url, admin)
    assert max(reads) <= 4, reads


# the write's UPDATE finding its row by a probe of the key (0010), and as 0009 found it:
# the tag table joined to the batch's keys, the join's order left to the planner
_PROBED_UPDATE = """
        FROM u CROSS JOIN LATERAL (
            SELECT x.ctid AS version_at FROM ocitags x
            WHERE x.repository = u.repository AND x.tag = u.tag
            LIMIT 1
        ) AS found
        WHERE u.expected_id IS NOT NULL AND t.ctid = found.version_at
"""
_JOINED_UPDATE = """
        FROM u
        WHERE u.expected_id IS NOT NULL AND t.repository = u.repository AND t.tag = u.tag
"""


def _definition(version: int, function: str) -> str:
    """``CREATE OR REPLACE`` of ``function`` as migration ``version`` made it."""
    sql = next(m.sql for m in available() if m.version == version)
    body = sql[sql.index(f"CREATE FUNCTION {function}(") :]
    return "CREATE OR REPLACE" + body[len("CREATE") : body.index("END $$;") + len("END $$;")]


def _as_in_0009(function: str) -> str:
    """``CREATE OR REPLACE`` of one of the store's functions as migration 0009 made it
    (the key of the batch's tags joined to the tag table, in an order left to the
    planner): the lookup as 0009 wrote it; the write with the arguments the store sends
    since 0011, its UPDATE and planner settings 0009's."""
    if function == "ocitag_store_lookup":
        return _definition(9, function)
    newest = _definition(11, function)
    settings = "\nSET enable_memoize = off SET jit = off AS $$"
    assert _PROBED_UPDATE in newest and settings in newest, "0011's write is not as expected"
    return newest.replace(_PROBED_UPDATE, _JOINED_UPDATE).replace(settings, " SET jit = off AS $$")


@pytest.mark.parametrize("function", ["ocitag_store_lookup", "ocitag_store_write"])
async def test_as_in_0009_a_batch_of_one_tag_walked_the_tag_key_index(
    database_url: str, admin: asyncpg.Connection, function: str
) -> None:
    """The control of the test above, for each function: 0009's version of it, the tags
    joined to the batch's keys, walks the whole key index in the batches above (the
    defect 0010 mends), and the counting above sees it."""
    await admin.execute(_as_in_0009(function))
    reads = await _tag_key_reads_of_batches_of_one_after_an_analyse_at_one_row(database_url, admin)
    assert min(reads) >= GROWN_TO, reads


async def test_a_worker_of_the_previous_release_still_writes_after_0011(
    admin: asyncpg.Connection,
) -> None:
    """0011 adds the write of whole rows beside 0010's write of one array per column, which
    the previous release calls until it is replaced (docs/upgrading.md): that one still
    writes a tag on the migrated schema."""
    repository = f"registry.example.com/old-{uuid.uuid4().hex[:8]}"
    epoch = await admin.fetchval("SELECT epoch FROM processed_current")
    empty_records = "'{}'::bytea[], '{}'::bytea[], '{}'::smallint[], '{}'::smallint[], " + (
        "'{}'::bigint[], '{}'::timestamptz[], '{}'::text[], '{}'::smallint[], "
        "'{}'::bytea[], '{}'::bytea[], '{}'::bytea[]"
    )
    empty_entries = (
        "'{}'::timestamptz[], '{}'::bigint[], '{}'::bigint[], '{}'::bigint[], "
        "'{}'::integer[], '{}'::smallint[], '{}'::bytea[], '{}'::bytea[]"
    )
    row = await admin.fetchrow(
        "SELECT * FROM ocitag_store_write("
        "ARRAY[$1::text], ARRAY['v1'], ARRAY[$2::text], ARRAY['ci'], ARRAY[now()], "
        "ARRAY['ci'], ARRAY[now()], ARRAY[1::bigint], ARRAY['urn:old'], ARRAY['e1'], "
        "ARRAY[NULL::timestamptz], ARRAY[NULL::text], ARRAY[NULL::timestamptz], "
        "ARRAY[NULL::text], ARRAY[NULL::text], now(), $3::integer, "
        f"{empty_records}, '{{}}'::bigint[], '{{}}'::text[], {empty_entries})",
        repository,
        digest(1),
        epoch,
    )
    assert row is not None
    assert [tuple(key) for key in row["written"]] == [(repository, "v1")] and row["recorded"] == 0
    assert await admin.fetchval(
        "SELECT artifact FROM ocitags WHERE repository = $1 AND tag = 'v1'", repository
    ) == digest(1)
