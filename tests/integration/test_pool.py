"""The worker's pool on real PostgreSQL: a connection goes back without the reset query
after a committed apply, and with it after any other use or a failed apply, so that no
session state (advisory lock, setting, LISTEN) reaches the next user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.helpers.store import CTX, items, now
from tests.helpers.strategies import BASE, digest, make_event
from worker.db import open_pool
from worker.store import Store

pytestmark = pytest.mark.integration

_LOCK = 0x0C17F0


@pytest.fixture
async def one(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The worker's own pool, one connection: every use is the next one's predecessor."""
    pool = await open_pool(
        database_url, min_size=1, max_size=1, command_timeout=30, idle_in_transaction=60
    )
    try:
        yield pool
    finally:
        await pool.close()


class _Sent:
    """The statements the pool's one connection sends."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def __call__(self, query: Any) -> None:
        self.queries.append(" ".join(query.query.split()))

    def resets(self) -> int:
        return sum("pg_advisory_unlock_all" in q for q in self.queries)


async def _logged(pool: asyncpg.Pool) -> _Sent:
    sent = _Sent()
    async with pool.acquire() as conn:
        conn.add_query_logger(sent)
    return sent


async def test_a_committed_apply_goes_back_without_the_reset_query(one: asyncpg.Pool) -> None:
    store = Store(one, CTX)
    await store.apply(items([make_event("warm", digest(0), BASE, event_id="w")]), now())
    sent = await _logged(one)
    for n in range(3):
        event = make_event(f"t{n}", digest(n), BASE, event_id=f"e{n}")
        await store.apply(items([event], n + 1), now())
    await one.execute("SELECT 1")  # a plain use after them: flushes the logger's calls
    # the logger's own use (reset), BEGIN, lookup, write, COMMIT a batch, then the plain
    # use and its reset
    applies = sent.queries[1:-2]
    statements = ["BEGIN", "ocitag_store_lookup(", "ocitag_store_write(", "COMMIT;"] * 3
    assert len(applies) == len(statements), applies
    assert all(s in q for s, q in zip(statements, applies, strict=True)), applies
    assert sent.resets() == 2 and "pg_advisory_unlock_all" in sent.queries[-1], sent.queries


async def test_any_other_use_is_reset_and_leaves_no_state(one: asyncpg.Pool) -> None:
    store = Store(one, CTX)
    await store.apply(items([make_event("warm", digest(0), BASE, event_id="w")]), now())
    async with one.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK)
        await conn.execute("SET work_mem = '7MB'")
        await conn.execute("LISTEN ocitag_pool_test")
    async with one.acquire() as conn:
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 "
            "AND pid = pg_backend_pid()",
            _LOCK,
        )
        assert held == 0
        assert await conn.fetchval("SHOW work_mem") != "7MB"
        assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
        # what the worker's pool sets at connect survives its reset
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"


async def test_a_failed_apply_is_reset(one: asyncpg.Pool) -> None:
    """An apply that raised gets the full reset: only a committed one says it left no
    session state."""
    store = Store(one, CTX)
    await store.apply(items([make_event("warm", digest(0), BASE, event_id="w")]), now())
    async with one.acquire() as conn:  # a session setting the failed apply leaves behind
        await conn.execute("SET work_mem = '7MB'")
        # what a stale statement cache would do to the next apply: the lookup's table gone
        await conn.execute("ALTER TABLE ocitags RENAME TO ocitags_away")
    sent = await _logged(one)
    before = sent.resets()  # the logger's own use was reset when it went back
    with pytest.raises(Exception, match="ocitags"):
        await store.apply(items([make_event("x", digest(1), BASE, event_id="x")], 9), now())
    after = sent.resets()  # before the next use, whose own release is reset too
    async with one.acquire() as conn:
        await conn.execute("ALTER TABLE ocitags_away RENAME TO ocitags")
    assert after == before + 1, sent.queries
