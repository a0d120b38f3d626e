"""PostgreSQL for the history questions (docs/history.md): a tag's entries, a record as
of an instant, the tags that carry a digest. Read-only (the worker writes the entries);
asked by the api (worker/api/history_routes.py) and the ``history`` command.

Each question is one statement on the indexes of migration 0007: by tag and time (which
orders by version too), the creations, and by artifact (``?at=`` and the digest question
through the functions of migrations 0007 and 0008). ``may_read`` (an OCITag ID →
whether the caller may read it; everything by default) filters what a list returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from worker.history import (
    artifact_bytes,
    artifact_prefix,
    artifact_text,
    change_of,
    event_id_text,
    name_ref,
)
from worker.identifiers import split_ocitag_id
from worker.timefmt import format_rfc3339

MayRead = Callable[[str], bool]
#: before the first entry of a page: later than any entry
NEWEST = (datetime.max.replace(tzinfo=UTC), 2**63 - 1)
#: before the first item of a digest page
FIRST = (-(2**63), -1)

#: queries one page of the digest question may make (as a filtered list page)
MAX_SCANS = 5


def allow_all(_: str) -> bool:
    return True


_ENTRIES = """
SELECT h.version, h.change, h.artifact, b.name AS by, h.at, h.recorded_at, s.name AS source,
       h.event_id
FROM ocitag_history h
JOIN ocitag_history_names b ON b.ref = h.by_ref
JOIN ocitag_history_names s ON s.ref = h.source_ref
WHERE h.tag_ref = $1 AND h.at <= $2 AND (h.at, h.version) < ($2, $3::bigint)
ORDER BY h.at DESC, h.version DESC
LIMIT $4
"""

# the latest entry at or before the instant, and the creation of the record as of it
# (the latest creation or baseline up to it; a baseline's creation is kept beside it):
# migration 0007's function, which probes the partitions newest first and stops at the
# first that answers
_AT = """
SELECT version, change, artifact, by, at, c_change, c_at, c_by, bl_by, bl_on
FROM ocitag_history_as_of($1, $2)
"""

# intervals: each starts at an entry that made a tag point at the digest (baseline,
# created, updated) and ends at the next one that deleted it or pointed it elsewhere:
# migration 0008's function, planned once per session rather than for every partition at
# every call
_TAGS = """
SELECT tag, tag_ref, start, from_version, until
FROM ocitag_history_tags($1, $2, $3, $4, $5, $6)
"""


@dataclass(frozen=True, slots=True)
class AsOf:
    """A record as of an instant: the seed's OCITag and its version."""

    record: dict[str, str]
    version: int


@dataclass(frozen=True, slots=True)
class TagsPage:
    items: list[dict[str, Any]]
    #: (tag_ref, from_version) of the last row looked at, when there may be more
    after: tuple[int, int] | None


class HistoryReads(Protocol):
    async def entries(
        self, ocitag: str, before: tuple[datetime, int], limit: int
    ) -> list[dict[str, Any]]: ...

    async def as_of(self, ocitag: str, instant: datetime) -> AsOf | None: ...

    async def tags(
        self, digest: str, *, history: bool, after: tuple[int, int], limit: int, may_read: MayRead
    ) -> TagsPage: ...


def entry_json(row: asyncpg.Record) -> dict[str, Any]:
    change, repointed = change_of(row["change"])
    return {
        "version": int(row["version"]),
        "change": change,
        "artifact": artifact_text(row["artifact"]),
        "by": row["by"],
        "at": format_rfc3339(row["at"]),
        "recorded_at": format_rfc3339(row["recorded_at"]),
        "event": {"source": row["source"], "id": event_id_text(row["event_id"])},
        "repointed": repointed,
    }


def _as_of(ocitag: str, row: asyncpg.Record) -> AsOf | None:
    if change_of(row["change"])[0] == "deleted":
        return None
    repository, tag = split_ocitag_id(ocitag)
    creation = change_of(row["c_change"])[0] if row["c_change"] is not None else None
    if creation == "baseline" and row["bl_by"] is not None:
        created_by, created_on = row["bl_by"], row["bl_on"]
    elif creation == "created":
        created_by, created_on = row["c_by"], row["c_at"]
    else:  # the creation is older than the kept history (a retention): the entry's own
        created_by, created_on = row["by"], row["at"]
    record = {
        "artifact": artifact_text(row["artifact"]),
        "repository": repository,
        "tag": tag,
        "created_by": created_by,
        "created_on": format_rfc3339(created_on),
        "last_modified_by": row["by"],
        "last_modified_on": format_rfc3339(row["at"]),
    }
    return AsOf(record, int(row["version"]))


class PgHistoryReads:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def entries(
        self, ocitag: str, before: tuple[datetime, int], limit: int
    ) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(_ENTRIES, name_ref(ocitag), *before, limit)
        return [entry_json(r) for r in rows]

    async def as_of(self, ocitag: str, instant: datetime) -> AsOf | None:
        row = await self._pool.fetchrow(_AT, name_ref(ocitag), instant)
        return None if row is None else _as_of(ocitag, row)

    async def tags(
        self, digest: str, *, history: bool, after: tuple[int, int], limit: int, may_read: MayRead
    ) -> TagsPage:
        """Up to ``limit`` readable intervals after ``after``; rows the caller may not
        read are skipped (a page may then look at more rows than it returns)."""
        raw = artifact_bytes(digest)
        items: list[dict[str, Any]] = []
        position = after
        # a caller who may read little of a popular digest: bounded work per request (the
        # cursor is the last row examined, a hash reference that names no tag)
        for _ in range(MAX_SCANS):
            rows = await self._pool.fetch(
                _TAGS, artifact_prefix(raw), raw, *position, history, limit + 1
            )
            for index, row in enumerate(rows[:limit]):
                position = (int(row["tag_ref"]), int(row["from_version"]))
                if not may_read(row["tag"]):
                    continue
                items.append(
                    {
                        "tag": row["tag"],
                        "from": format_rfc3339(row["start"]),
                        "until": format_rfc3339(row["until"]) if row["until"] else None,
                        "from_version": int(row["from_version"]),
                    }
                )
                if len(items) == limit:
                    return TagsPage(items, position if index + 1 < len(rows) else None)
            if len(rows) <= limit:
                return TagsPage(items, None)
        return TagsPage(items, position)
