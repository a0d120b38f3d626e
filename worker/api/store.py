"""PostgreSQL for the API: reads of live records, and the Idempotency-Key times.

Writes never go here (they go through Kafka); the one table the API writes is its own
``api_requests`` (the time of a key's first request, see migration 0003).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from worker.timefmt import format_rfc3339

# the live records (``ocitags`` also holds tombstones of deleted tags)
LIVE = "live_ocitags"

_COLUMNS = (
    "artifact, repository, tag, created_by, created_on, last_modified_by, last_modified_on, version"
)
_GET = f"SELECT {_COLUMNS} FROM {LIVE} WHERE repository = $1 AND tag = $2"  # noqa: S608
_PAGE = (
    f"SELECT {_COLUMNS} FROM {LIVE} WHERE repository = $1 AND tag > $2 "  # noqa: S608
    "ORDER BY tag LIMIT $3"
)
# a watch's snapshot: every live record (of a repository, or all), keyset paged
_SNAPSHOT_ALL = (
    f"SELECT {_COLUMNS} FROM {LIVE} WHERE (repository, tag) > ($1, $2) "  # noqa: S608
    "ORDER BY repository, tag LIMIT $3"
)
# One round trip: insert the key's time unless it is there, and return the stored one.
# (The CTE's insert is invisible to the SELECT beside it: exactly one row comes back.)
_RECEIVED = """
WITH inserted AS (
    INSERT INTO api_requests (source, key, received_at) VALUES ($1, $2, $3)
    ON CONFLICT (source, key) DO NOTHING
    RETURNING received_at
)
SELECT received_at FROM inserted
UNION ALL
SELECT received_at FROM api_requests WHERE source = $1 AND key = $2
LIMIT 1
"""
_PRUNE = """
DELETE FROM api_requests WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM api_requests WHERE received_at < now() - make_interval(secs => $1)
    LIMIT 5000))
"""


@dataclass(frozen=True, slots=True)
class Stored:
    """A live record: the seed's OCITag and its version (the ETag)."""

    record: dict[str, Any]
    version: int


class Reads(Protocol):
    async def get(self, repository: str, tag: str) -> Stored | None: ...

    async def page(self, repository: str, after: str, limit: int) -> list[Stored]: ...

    async def received_at(self, source: str, key: str, now: datetime) -> datetime: ...

    async def snapshot(
        self, repository: str | None, after: tuple[str, str], limit: int
    ) -> list[Stored]: ...


def _stored(row: asyncpg.Record) -> Stored:
    return Stored(
        {
            "artifact": row["artifact"],
            "repository": row["repository"],
            "tag": row["tag"],
            "created_by": row["created_by"],
            "created_on": format_rfc3339(row["created_on"]),
            "last_modified_by": row["last_modified_by"],
            "last_modified_on": format_rfc3339(row["last_modified_on"]),
        },
        int(row["version"]),
    )


class PgReads:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, repository: str, tag: str) -> Stored | None:
        row = await self._pool.fetchrow(_GET, repository, tag)
        return None if row is None else _stored(row)

    async def page(self, repository: str, after: str, limit: int) -> list[Stored]:
        return [_stored(r) for r in await self._pool.fetch(_PAGE, repository, after, limit)]

    async def snapshot(
        self, repository: str | None, after: tuple[str, str], limit: int
    ) -> list[Stored]:
        """Live records after ``after`` (repository, tag), in that order; of one
        repository when given."""
        if repository is not None:
            return await self.page(repository, after[1], limit)
        return [_stored(r) for r in await self._pool.fetch(_SNAPSHOT_ALL, *after, limit)]

    async def received_at(self, source: str, key: str, now: datetime) -> datetime:
        found: datetime = await self._pool.fetchval(_RECEIVED, source, key, now)
        return found

    async def prune(self, retention_seconds: float) -> int:
        status: str = await self._pool.execute(_PRUNE, float(retention_seconds))
        return int(status.rsplit(" ", 1)[-1])

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")
