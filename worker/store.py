"""PostgreSQL: a batch of events applied in one transaction, settled by the database.

Round trips per batch, whatever its size: BEGIN (1), the current epoch of the
idempotency record (1), what it holds for the batch's events (1), read the tags (1),
write the tags with the key guard (1, again only for tags a concurrent writer changed in
between), record the new events with what rebuilds their outcomes and, in the same
statement, the history entries of their 200 outcomes (1; docs/history.md), COMMIT (1).
The tags of repeated applied changes (a redelivery) are read with the batch's own, for
the state topic (worker/state.py ``refreshed``).
An entry is written only with the change it records, so the guard that serialises the
writers of a tag gives its entries one version each, without gaps. Two writers of one
tag are serialised by the row lock and the guard in the UPDATE (the row still has the
key the decision was made against: every write, a 404 deletion's included, sets a
greater key, whereas the version does not always change), or by ``ON
CONFLICT DO NOTHING`` for a new tag: the loser re-reads and decides again. Two appliers
of one event are serialised by the record's primary key (key, epoch): the second one's
insert waits for the first to commit and then inserts nothing, and its transaction is
redone (it then finds the event processed). The epoch is read FOR SHARE, so a rotation
to the next one waits for every applier of the old one: both never run at once.

The record (migration 0004): a 16-byte key hashed from (source, id), a 16-byte
fingerprint, and what rebuilds the outcome (worker/outcomes.py), in a table partitioned
by epoch; worker/partitions.py rotates to a new partition every ``partition_seconds`` and
drops the partitions that ended more than the retention ago.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import asyncpg

from worker.db import Connection, classify_db_error
from worker.decision import Applied as AppliedDecision
from worker.decision import Change, Decision, TagRecord
from worker.errors import Cause, FatalError, PermanentError, TransientError
from worker.history import Entry, StoredColumns, entry_of, stored_columns
from worker.outcomes import Outcome, OutcomeContext, batch_outcomes, processed_row
from worker.plan import (
    EventKey,
    Item,
    ProcessedRow,
    Superseded,
    TagKey,
    decide_tag,
    events_by_tag,
    first_occurrences,
)
from worker.retry import Backoff, count_retry, retrying
from worker.state import refreshed, repeated_tags
from worker.statistics import Statistics, analyse_table

MAX_WRITE_ROUNDS = 8
#: history names (tags, actors, sources) remembered as stored, so that a batch does not
#: send them again; forgotten all at once past this many (about 6 MB), then relearned:
#: sending a stored name again costs an index probe, nothing more
NAMES_REMEMBERED = 100_000
MAX_TX_ATTEMPTS = 5
# batches redone because a concurrent applier recorded some of their events first (each
# redo replays those): only appliers racing on the same events, as in a rebalance
MAX_RACE_ATTEMPTS = 50

# Two statements, not one: under READ COMMITTED a statement's snapshot is taken before
# its locks are granted, so a lookup joined to the FOR SHARE read could miss the records
# of appliers that a rotation, committed meanwhile, waited for. Read after the lock is
# held, the lookup's own snapshot sees them (a merged form with a re-check would save one
# round trip, within the benchmark's noise, and its window cannot be staged in a test).
_CURRENT_EPOCH = "SELECT epoch FROM processed_current FOR SHARE"

_PROCESSED = """
SELECT key, fingerprint, processed_at, status, change, version, created_on, created_by,
       source_ref, outcome_key, outcome, superseded
FROM processed_events WHERE key = ANY($1::bytea[])
"""

# The new events' records and, in the same statement (no round trip of its own), the
# history entries of their 200 outcomes with the names those entries introduce
# (migration 0005): no change without its entry, no entry without its change. Data-
# modifying CTEs run whether or not the main statement reads them.
_RECORD = """
WITH names AS (
    INSERT INTO ocitag_history_names (ref, name)
    SELECT r, n FROM unnest($14::bigint[], $15::text[]) AS x(r, n) ORDER BY r
    ON CONFLICT (ref) DO NOTHING
), history AS (
    INSERT INTO ocitag_history (at, recorded_at, tag_ref, by_ref, source_ref, version, epoch,
                                change, artifact, event_id)
    SELECT ha, $3, ht, hb, hs, hv, $2, hc, hx, hi
    FROM unnest($16::timestamptz[], $17::bigint[], $18::bigint[], $19::bigint[],
                $20::integer[], $21::smallint[], $22::bytea[], $23::bytea[])
        AS h(ha, ht, hb, hs, hv, hc, hx, hi)
)
INSERT INTO processed_events (key, epoch, fingerprint, processed_at, status, change, version,
                              created_on, created_by, source_ref, outcome_key, outcome,
                              superseded)
SELECT k, $2, f, $3, st, ch, v, co, cb, sr, ok, o, s
FROM unnest($1::bytea[], $4::bytea[], $5::smallint[], $6::smallint[], $7::bigint[],
            $8::timestamptz[], $9::text[], $10::smallint[], $11::bytea[], $12::bytea[],
            $13::bytea[])
    AS u(k, f, st, ch, v, co, cb, sr, ok, o, s)
ORDER BY k
ON CONFLICT (key, epoch) DO NOTHING
RETURNING key
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
# ``recorded_at`` (indexed, for tombstone pruning) changes only when the row becomes or
# stays a tombstone: a move of a live tag then changes no indexed column and can be a
# HOT update (no new index entry, the old version pruned without vacuum).
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
        recorded_at = CASE WHEN u.deleted_on IS NULL THEN t.recorded_at ELSE $16 END
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

# the deleted_on test is repeated in the outer WHERE: a row brought back to life between
# the inner SELECT and the DELETE is a live record and must stay
_PRUNE_TOMBSTONES = """
DELETE FROM ocitags
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM ocitags
    WHERE deleted_on IS NOT NULL AND recorded_at < now() - $1::interval LIMIT $2
)) AND deleted_on IS NOT NULL AND recorded_at < now() - $1::interval
"""

_CHANGES: dict[str, int] = {"created": 1, "updated": 2, "unchanged": 3}
_CHANGE_NAMES: dict[int, Change] = {1: "created", 2: "updated", 3: "unchanged"}


class EventStore(Protocol):
    """What the pipeline needs of a store (the real one below; fakes in unit tests)."""

    async def apply(self, items: Sequence[Item], processed_at: datetime) -> list[Outcome]: ...

    async def ping(self) -> None: ...


def _classify(exc: BaseException) -> BaseException:
    if isinstance(exc, TransientError | PermanentError | FatalError):
        return exc
    return classify_db_error(exc, "worker")


@dataclass(frozen=True, slots=True)
class Applied:
    """What one transaction did: each item's outcome, and the records it added to the
    partition of ``epoch``."""

    outcomes: list[Outcome]
    epoch: int
    recorded: int
    #: the history names it stored (known once it committed)
    names: tuple[int, ...] = ()


class Store:
    """Applies batches through a connection pool."""

    def __init__(self, pool: asyncpg.Pool, ctx: OutcomeContext) -> None:
        self._pool = pool
        self._ctx = ctx
        self._sources = _Sources(ctx.worker_source, ctx.problem_base_uri)
        #: the refs of ``ocitag_history_names`` known to be committed (never deleted)
        self._names: set[int] = set()
        self.statistics = Statistics(functools.partial(analyse_table, pool))

    async def apply(self, items: Sequence[Item], processed_at: datetime) -> list[Outcome]:
        """The outcome of each item, in order, with every effect durable on return.
        Serialisation failures, deadlocks and events recorded meanwhile by another
        applier redo the transaction; other faults raise TransientError, PermanentError
        or FatalError."""
        if not items:
            return []

        async def transaction() -> Applied:
            async with self._pool.acquire() as conn:
                await self._sources.load(conn)
                # the version-guard loop relies on each statement seeing the latest
                # commits
                async with conn.transaction(isolation="read_committed"):
                    return await _apply(
                        conn, self._ctx, self._sources, items, processed_at, names=self._names
                    )

        async def settled() -> Applied:
            # a lost conflict is redone here at once (briefly backed off); any other
            # fault, and a conflict lost MAX_TX_ATTEMPTS times, goes up to the caller
            return await retrying(
                transaction,
                Backoff(0.005, 0.1),
                classify=_classify,
                causes={Cause.DB_CONFLICT},
                attempts=MAX_TX_ATTEMPTS,
            )

        # another applier recorded some of the events first: that is progress there, and
        # the batch done again replays them, so it has a budget of its own
        applied = await retrying(
            settled,
            Backoff(0.001, 0.05),
            causes={Cause.DB_CLAIMED_MEANWHILE},
            attempts=MAX_RACE_ATTEMPTS,
        )
        self.statistics.recorded(applied.epoch, applied.recorded)
        if len(self._names) + len(applied.names) > NAMES_REMEMBERED:
            self._names.clear()
        self._names.update(applied.names)
        return applied.outcomes

    async def close(self) -> None:
        """Stop an analysis in progress, before the pool closes."""
        await self.statistics.close()

    async def ping(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def prune_tombstones(self, older_than_seconds: int, batch: int = 5_000) -> int:
        """Delete tombstones recorded longer ago than the retention, in batches like
        ``prune``. A move older than a pruned tombstone's deletion can then bring the tag
        back (README, "Deletions"). A small batch per statement, so that no long lock or
        transaction holds up the appliers."""
        total = 0
        while True:
            async with self._pool.acquire() as conn:
                status = await conn.execute(
                    _PRUNE_TOMBSTONES, timedelta(seconds=older_than_seconds), batch
                )
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < batch:
                return total


Published = tuple[str, str | None]  # (worker source, problem base URI)


class _Sources:
    """The (worker source, problem base) pairs outcomes were published under
    (``outcome_sources``), both ways: a rebuilt outcome keeps those of its first
    publication. Rows of before migration 0006 have no problem base."""

    def __init__(self, current: str, problem_base: str) -> None:
        self.current: Published = (current, problem_base)
        self.ids: dict[Published, int] = {}
        self.names: dict[int, Published] = {}

    async def load(self, conn: Connection, *, refresh: bool = False) -> None:
        if self.current in self.ids and not refresh:
            return
        await conn.execute(
            "INSERT INTO outcome_sources (source, problem_base) VALUES ($1, $2) "
            "ON CONFLICT (source, problem_base) DO NOTHING",
            *self.current,
        )
        rows = await conn.fetch("SELECT id, source, problem_base FROM outcome_sources")
        self.ids = {(r["source"], r["problem_base"]): r["id"] for r in rows}
        self.names = {r["id"]: (r["source"], r["problem_base"]) for r in rows}


def event_key(key: EventKey) -> bytes:
    """The record's key of (source, id): 16 bytes of SHA-256 over the source's length
    (4 bytes, big-endian), the source and the id, in UTF-8 (migration 0004 computes the
    same for rows it converted)."""
    source = key[0].encode()
    return hashlib.sha256(len(source).to_bytes(4, "big") + source + key[1].encode()).digest()[:16]


async def _processed(
    conn: Connection, sources: _Sources, keys: dict[bytes, EventKey]
) -> dict[EventKey, ProcessedRow]:
    rows = await conn.fetch(_PROCESSED, list(keys))
    found: dict[EventKey, ProcessedRow] = {}
    for r in rows:
        ref = r["source_ref"]
        if ref is not None and ref not in sources.names:  # another worker's, added since
            await sources.load(conn, refresh=True)
        published = sources.names.get(ref) if ref is not None else None
        found[keys[r["key"]]] = ProcessedRow(
            r["fingerprint"],
            r["processed_at"],
            r["status"],
            r["outcome_key"],
            r["outcome"],
            _CHANGE_NAMES.get(r["change"]),
            r["version"],
            r["created_on"],
            r["created_by"],
            published[0] if published else None,
            published[1] if published else None,
            Superseded.from_bytes(r["superseded"]) if r["superseded"] is not None else None,
        )
    return found


async def _record(
    conn: Connection,
    sources: _Sources,
    epoch: int,
    at: datetime,
    rows: Sequence[tuple[bytes, ProcessedRow]],
    *,
    history: StoredColumns,
) -> None:
    """Insert the new events' records and the history entries of their changes; a record
    already there (another applier's, committed meanwhile) makes the whole batch be
    redone (the entries with it)."""
    columns: list[list[object]] = [[] for _ in range(11)]
    for key, row in rows:
        values = (
            key,
            row.fingerprint,
            row.status,
            _CHANGES[row.change] if row.change is not None else None,
            row.version,
            row.created_on,
            row.created_by,
            sources.ids[(row.worker_source, row.problem_base)]
            if row.worker_source is not None
            else None,
            row.outcome_key,
            row.outcome,
            row.superseded.to_bytes() if row.superseded is not None else None,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    inserted = await conn.fetch(
        _RECORD,
        columns[0],
        epoch,
        at,
        *columns[1:],
        history.name_refs,
        history.names,
        *history.columns,
    )
    if len(inserted) != len(rows):
        raise TransientError(
            Cause.DB_CLAIMED_MEANWHILE,
            f"{len(rows) - len(inserted)} events recorded meanwhile by another applier",
        )


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
    conn: Connection,
    items: Sequence[Item],
    groups: dict[TagKey, list[int]],
    at: datetime,
    also: Iterable[TagKey] = (),
) -> tuple[dict[int, Decision], dict[TagKey, TagRecord | None]]:
    """Fold each tag's events against its row and write the result under the version
    guard; tags whose guard failed are read again and decided again. Also returns each
    tag's row as the batch leaves it: the decided tags', and those of ``also`` (read
    with the first round, in the same statement)."""
    decided: dict[int, Decision] = {}
    pending = dict(groups)
    extra = [tag for tag in dict.fromkeys(also) if tag not in groups]
    stored = await _read_tags(conn, [*pending, *extra])
    current: dict[TagKey, TagRecord | None] = {tag: stored.get(tag) for tag in extra}
    for round_ in range(MAX_WRITE_ROUNDS):
        if round_:
            stored = await _read_tags(conn, pending)
        writes: list[tuple[TagRecord, TagRecord | None]] = []
        by_tag: dict[TagKey, tuple[TagRecord | None, list[Decision]]] = {}
        for tag, indexes in pending.items():
            before = stored.get(tag)
            after, decisions = decide_tag(before, items, indexes)
            by_tag[tag] = (after if after is not None else before, decisions)
            if after is not None and after is not before:
                writes.append((after, before))
        written = await _write_tags(conn, writes, at) if writes else set()
        conflicted = {(w.repository, w.tag) for w, _ in writes} - written
        for tag, (row, decisions) in by_tag.items():
            if tag not in conflicted:
                decided.update(zip(pending[tag], decisions, strict=True))
                current[tag] = row
        if not conflicted:
            return decided, current
        count_retry(Cause.DB_VERSION_CONFLICT, len(conflicted))
        pending = {tag: pending[tag] for tag in conflicted}
    raise TransientError(Cause.DB_VERSION_CONFLICT, f"{len(pending)} tags kept changing under us")


def history_entries(
    ctx: OutcomeContext, decisions: dict[int, Decision], new: Sequence[int], at: datetime
) -> list[tuple[str, Entry]]:
    """The history entries of a batch: one per 200 outcome (an applied decision), as
    (OCITag ID, entry)."""
    entries = []
    for index in new:
        decision = decisions.get(index)
        if isinstance(decision, AppliedDecision):
            record = decision.record
            entries.append(
                (f"{record.repository}:{record.tag}", entry_of(decision, ctx.immutable_tags, at))
            )
    return entries


async def _apply(
    conn: Connection,
    ctx: OutcomeContext,
    sources: _Sources,
    items: Sequence[Item],
    at: datetime,
    *,
    names: AbstractSet[int] = frozenset(),
) -> Applied:
    epoch = await conn.fetchval(_CURRENT_EPOCH)
    firsts = first_occurrences(items)
    hashed = {k: event_key(k) for k in firsts}
    earlier = await _processed(conn, sources, {h: k for k, h in hashed.items()})
    new = sorted(index for key, index in firsts.items() if key not in earlier)
    # the tags of repeated applied changes: their state records show the rows as the
    # batch leaves them, read with the batch's own tags (worker/state.py ``refreshed``)
    repeats = repeated_tags(items, earlier)
    decisions, current = await _decide_and_write(
        conn, items, events_by_tag(items, new), at, also=repeats
    )

    outcomes = batch_outcomes(
        ctx, items, new=new, decisions=decisions, earlier=earlier, processed_at=at
    )
    if any(o.replay for o in outcomes):
        outcomes = refreshed(outcomes, {f"{r}:{t}": row for (r, t), row in current.items()})
    if new:
        rows = [
            (hashed[items[i].key], processed_row(ctx, items[i], decisions.get(i), outcomes[i], at))
            for i in new
        ]
        history = stored_columns(history_entries(ctx, decisions, new, at), names)
        await _record(conn, sources, epoch, at, rows, history=history)
        return Applied(outcomes, epoch, len(new), tuple(history.name_refs))
    return Applied(outcomes, epoch, len(new))
