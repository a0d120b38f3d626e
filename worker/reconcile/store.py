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
    """Reads ``live_ocitags``: tombstones are not records to compare with."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def repositories(self, host: str) -> list[str]:
        """Repositories of ``host`` that have live records (a sequential scan: this runs
        once per reconcile, not per event)."""
        rows = await self._fetch(
            "SELECT DISTINCT repository FROM live_ocitags "
            "WHERE starts_with(repository, $1) ORDER BY repository",
            f"{host}/",
        )
        return [row["repository"] for row in rows]

    async def live(self, repository: str) -> dict[str, LiveRecord]:
        rows = await self._fetch(
            "SELECT tag, artifact, last_modified_on FROM live_ocitags WHERE repository = $1",
            repository,
        )
        return {row["tag"]: LiveRecord(row["artifact"], row["last_modified_on"]) for row in rows}

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        try:
            return await self._pool.fetch(query, *args)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            raise classify_db_error(exc, "reconcile") from exc
