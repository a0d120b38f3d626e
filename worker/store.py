"""PostgreSQL: a batch of events applied in one transaction, settled by the database.

Round trips per batch, whatever its size: claim the events (1), read the stored outcome
of those already processed (0-1), read the tags (1), write the tags with the key
guard (1, again only for tags a concurrent writer changed in between), store the
outcomes (1). Two appliers of one event are serialised by the claim's primary key; two
writers of one tag by the row lock and the guard in the UPDATE (the row still has the
key the decision was made against: every write, a 404 deletion's included, sets a
greater key, whereas the version does not always change), or by ``ON CONFLICT DO
NOTHING`` for a new tag: the loser re-reads and decides again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import asyncpg

from worker.db import Connection, classify_db_error
from worker.decision import Decision, TagRecord
from worker.errors import Cause, FatalError, PermanentError, TransientError
from worker.outcomes import Outcome, OutcomeContext, batch_outcomes
from worker.plan import (
    EventKey,
    Item,
    ProcessedRow,
    TagKey,
    decide_tag,
    events_by_tag,
    first_occurrences,
)
from worker.retry import Backoff, count_retry, retrying

MAX_WRITE_ROUNDS = 8
MAX_TX_ATTEMPTS = 5

_CLAIM = """
INSERT INTO processed_events (source, id, fingerprint, processed_at)
SELECT s, i, f, $4 FROM unnest($1::text[], $2::text[], $3::bytea[]) AS u(s, i, f)
ORDER BY s, i
ON CONFLICT (source, id) DO NOTHING
RETURNING source, id
"""

_PROCESSED = """
SELECT p.source, p.id, p.fingerprint, p.processed_at, p.status, p.outcome_key, p.outcome
FROM processed_events p
JOIN unnest($1::text[], $2::text[]) AS u(s, i) ON p.source = u.s AND p.id = u.i
"""

_READ_TAGS = """
SELECT t.repository, t.tag, t.artifact, t.created_by, t.created_on, t.last_modified_by,
       t.last_modified_on, t.version, t.last_event_source, t.last_event_id, t.deleted_on,
       t.deleted_by
FROM ocitags t
JOIN unnest($1::text[], $2::text[]) AS u(r, g) ON t.repository = u.r AND t.tag = u.g
"""

# The guard: an existing row is updated only while it still has the key the decision
# was made against; a new row is inserted only if nobody inserted it first. What is
# returned was written; what is not must be decided again against the row as it now is.
_WRITE_TAGS = """
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                         $6::text[], $7::timestamptz[], $8::bigint[], $9::text[], $10::text[],
                         $11::timestamptz[], $12::text[], $13::timestamptz[], $14::text[],
                         $15::text[])
        AS u(repository, tag, artifact, created_by, created_on, last_modified_by,
             last_modified_on, version, last_event_source, last_event_id, deleted_on,
             deleted_by, expected_on, expected_source, expected_id)
), upd AS (
    UPDATE ocitags t
    SET artifact = u.artifact, created_by = u.created_by, created_on = u.created_on,
        last_modified_by = u.last_modified_by, last_modified_on = u.last_modified_on,
        version = u.version, last_event_source = u.last_event_source,
        last_event_id = u.last_event_id, deleted_on = u.deleted_on, deleted_by = u.deleted_by,
        recorded_at = $16
    FROM u
    WHERE u.expected_id IS NOT NULL AND t.repository = u.repository AND t.tag = u.tag
      AND t.last_modified_on = u.expected_on AND t.last_event_source = u.expected_source
      AND t.last_event_id = u.expected_id
    RETURNING t.repository, t.tag
), ins AS (
    INSERT INTO ocitags (repository, tag, artifact, created_by, created_on, last_modified_by,
                         last_modified_on, version, last_event_source, last_event_id,
                         deleted_on, deleted_by, recorded_at)
    SELECT repository, tag, artifact, created_by, created_on, last_modified_by,
           last_modified_on, version, last_event_source, last_event_id, deleted_on,
           deleted_by, $16
    FROM u WHERE u.expected_id IS NULL
    ORDER BY repository, tag
    ON CONFLICT (repository, tag) DO NOTHING
    RETURNING repository, tag
)
SELECT repository, tag FROM upd UNION ALL SELECT repository, tag FROM ins
"""

_STORE_OUTCOMES = """
UPDATE processed_events p
SET status = u.st, outcome_key = u.k, outcome = u.o
FROM unnest($1::text[], $2::text[], $3::smallint[], $4::bytea[], $5::bytea[]) AS u(s, i, st, k, o)
WHERE p.source = u.s AND p.id = u.i
"""

_PRUNE = """
DELETE FROM processed_events
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM processed_events WHERE processed_at < now() - $1::interval LIMIT $2
))
"""

# the deleted_on test is repeated in the outer WHERE: a row brought back to life between
# the inner SELECT and the DELETE is a live record and must stay
_PRUNE_TOMBSTONES = """
DELETE FROM ocitags
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM ocitags
    WHERE deleted_on IS NOT NULL AND recorded_at < now() - $1::interval LIMIT $2
)) AND deleted_on IS NOT NULL AND recorded_at < now() - $1::interval
"""


class EventStore(Protocol):
    """What the pipeline needs of a store (the real one below; fakes in unit tests)."""

    async def apply(self, items: Sequence[Item], processed_at: datetime) -> list[Outcome]: ...

    async def ping(self) -> None: ...


def _classify(exc: BaseException) -> BaseException:
    if isinstance(exc, TransientError | PermanentError | FatalError):
        return exc
    return classify_db_error(exc)


class Store:
    """Applies batches through a connection pool."""

    def __init__(self, pool: asyncpg.Pool, ctx: OutcomeContext) -> None:
        self._pool = pool
        self._ctx = ctx

    async def apply(self, items: Sequence[Item], processed_at: datetime) -> list[Outcome]:
        """The outcome of each item, in order, with every effect durable on return.
        Serialisation failures and deadlocks redo the transaction; other faults raise
        TransientError, PermanentError or FatalError."""
        if not items:
            return []

        async def transaction() -> list[Outcome]:
            # the version-guard loop relies on each statement seeing the latest commits
            async with self._pool.acquire() as conn, conn.transaction(isolation="read_committed"):
                return await _apply(conn, self._ctx, items, processed_at)

        # a lost conflict is redone here at once (briefly backed off); any other fault,
        # and a conflict lost MAX_TX_ATTEMPTS times, goes up to the caller's retry
        return await retrying(
            transaction,
            Backoff(0.005, 0.1),
            classify=_classify,
            causes={Cause.DB_CONFLICT},
            attempts=MAX_TX_ATTEMPTS,
        )

    async def ping(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def prune(self, older_than_seconds: int, batch: int = 5_000) -> int:
        """Delete processed-event records past retention, a small batch per statement
        so no long lock or transaction holds up the appliers."""
        return await self._prune(_PRUNE, older_than_seconds, batch)

    async def prune_tombstones(self, older_than_seconds: int, batch: int = 5_000) -> int:
        """Delete tombstones recorded longer ago than the retention, in batches like
        ``prune``. A move older than a pruned tombstone's deletion can then bring the tag
        back (README, "Deletions")."""
        return await self._prune(_PRUNE_TOMBSTONES, older_than_seconds, batch)

    async def _prune(self, statement: str, older_than_seconds: int, batch: int) -> int:
        total = 0
        while True:
            async with self._pool.acquire() as conn:
                status = await conn.execute(statement, timedelta(seconds=older_than_seconds), batch)
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < batch:
                return total


async def _claim(
    conn: Connection, keys: Sequence[EventKey], prints: Sequence[bytes], at: datetime
) -> set[EventKey]:
    rows = await conn.fetch(_CLAIM, [k[0] for k in keys], [k[1] for k in keys], list(prints), at)
    return {(r["source"], r["id"]) for r in rows}


async def _processed(conn: Connection, keys: Sequence[EventKey]) -> dict[EventKey, ProcessedRow]:
    if not keys:
        return {}
    rows = await conn.fetch(_PROCESSED, [k[0] for k in keys], [k[1] for k in keys])
    found: dict[EventKey, ProcessedRow] = {}
    for r in rows:
        if r["outcome"] is None:
            # claims and their outcomes commit together, and a claim waits for a
            # concurrent one: a committed claim without an outcome is a bug
            raise FatalError(f"processed event without outcome: {r['source']} {r['id']}")
        found[(r["source"], r["id"])] = ProcessedRow(
            r["fingerprint"], r["processed_at"], r["status"], r["outcome_key"], r["outcome"]
        )
    return found


async def _read_tags(conn: Connection, tags: Iterable[TagKey]) -> dict[TagKey, TagRecord]:
    keys = list(tags)
    rows = await conn.fetch(_READ_TAGS, [k[0] for k in keys], [k[1] for k in keys])
    return {(r["repository"], r["tag"]): TagRecord(**dict(r)) for r in rows}


async def _write_tags(
    conn: Connection, writes: Sequence[tuple[TagRecord, TagRecord | None]], at: datetime
) -> set[TagKey]:
    """Each (new row, the row it was decided against) under the guard."""
    columns: list[list[object]] = [[] for _ in range(15)]
    for record, before in sorted(writes, key=lambda w: (w[0].repository, w[0].tag)):
        values = (
            record.repository,
            record.tag,
            record.artifact,
            record.created_by,
            record.created_on,
            record.last_modified_by,
            record.last_modified_on,
            record.version,
            record.last_event_source,
            record.last_event_id,
            record.deleted_on,
            record.deleted_by,
            before.last_modified_on if before else None,
            before.last_event_source if before else None,
            before.last_event_id if before else None,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    rows = await conn.fetch(_WRITE_TAGS, *columns, at)
    return {(r["repository"], r["tag"]) for r in rows}


async def _decide_and_write(
    conn: Connection, items: Sequence[Item], groups: dict[TagKey, list[int]], at: datetime
) -> dict[int, Decision]:
    """Fold each tag's events against its row and write the result under the version
    guard; tags whose guard failed are read again and decided again."""
    decided: dict[int, Decision] = {}
    pending = dict(groups)
    for _ in range(MAX_WRITE_ROUNDS):
        stored = await _read_tags(conn, pending)
        writes: list[tuple[TagRecord, TagRecord | None]] = []
        outcomes: dict[TagKey, list[Decision]] = {}
        for tag, indexes in pending.items():
            before = stored.get(tag)
            after, decisions = decide_tag(before, items, indexes)
            outcomes[tag] = decisions
            if after is not None and after is not before:
                writes.append((after, before))
        written = await _write_tags(conn, writes, at) if writes else set()
        conflicted = {(w.repository, w.tag) for w, _ in writes} - written
        for tag, decisions in outcomes.items():
            if tag not in conflicted:
                decided.update(zip(pending[tag], decisions, strict=True))
        if not conflicted:
            return decided
        count_retry(Cause.DB_VERSION_CONFLICT, len(conflicted))
        pending = {tag: pending[tag] for tag in conflicted}
    raise TransientError(Cause.DB_VERSION_CONFLICT, f"{len(pending)} tags kept changing under us")


async def _apply(
    conn: Connection, ctx: OutcomeContext, items: Sequence[Item], at: datetime
) -> list[Outcome]:
    firsts = first_occurrences(items)
    keys = sorted(firsts)
    claimed = await _claim(conn, keys, [items[firsts[k]].event.fingerprint for k in keys], at)
    earlier = await _processed(conn, [k for k in keys if k not in claimed])
    if len(claimed) + len(earlier) != len(keys):
        raise TransientError(Cause.DB_CONFLICT, "a processed-event record vanished mid-batch")
    new = sorted(firsts[k] for k in claimed)
    decisions = await _decide_and_write(conn, items, events_by_tag(items, new), at)

    outcomes = batch_outcomes(
        ctx, items, new=new, decisions=decisions, earlier=earlier, processed_at=at
    )
    if new:
        await conn.execute(
            _STORE_OUTCOMES,
            [items[i].key[0] for i in new],
            [items[i].key[1] for i in new],
            [outcomes[i].status for i in new],
            [outcomes[i].key for i in new],
            [outcomes[i].value for i in new],
        )
    return outcomes
