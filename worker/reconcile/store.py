"""The live records reconcile compares with, read from PostgreSQL."""

from __future__ import annotations

import asyncpg

from worker.db import classify_db_error
from worker.reconcile.diff import LiveRecord

# Until the deletions migration adds the view every row of ocitags is live.
_RELATION_QUERY = (
    "SELECT CASE WHEN to_regclass('live_ocitags') IS NULL THEN 'ocitags' ELSE 'live_ocitags' END"
)


class PostgresLiveRecords:
    """Reads ``live_ocitags`` (plain ``ocitags`` on a schema before deletions)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._relation: str | None = None

    async def _from(self) -> str:
        if self._relation is None:
            self._relation = str(await self._fetchval(_RELATION_QUERY))
        return self._relation

    async def repositories(self, host: str) -> list[str]:
        """Repositories of ``host`` that have live records (a sequential scan: this runs
        once per reconcile, not per event)."""
        relation = await self._from()
        rows = await self._fetch(
            f"SELECT DISTINCT repository FROM {relation} "  # noqa: S608 - a fixed name
            "WHERE starts_with(repository, $1) ORDER BY repository",
            f"{host}/",
        )
        return [row["repository"] for row in rows]

    async def live(self, repository: str) -> dict[str, LiveRecord]:
        relation = await self._from()
        rows = await self._fetch(
            f"SELECT tag, artifact, last_modified_on FROM {relation} "  # noqa: S608
            "WHERE repository = $1",
            repository,
        )
        return {row["tag"]: LiveRecord(row["artifact"], row["last_modified_on"]) for row in rows}

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        try:
            return await self._pool.fetch(query, *args)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            raise classify_db_error(exc) from exc

    async def _fetchval(self, query: str) -> object:
        try:
            return await self._pool.fetchval(query)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            raise classify_db_error(exc) from exc
