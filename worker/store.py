"""PostgreSQL: a batch of events applied in one transaction, settled by the database.

Round trips per batch, whatever its size: four. BEGIN (1); one lookup (1): the current
epoch of the idempotency record FOR SHARE, what the record holds for the batch's events
and the rows of the batch's tags (those of repeated applied changes included, for the
state topic: worker/state.py ``refreshed``); one write (1): the tags with the key guard
and, in the same statement, the new events' records and the history entries of their 200
outcomes (docs/history.md), the records and entries only if every guard held; COMMIT
(1); the pool's reset query on release is skipped (worker/db.py). A guard that did not
hold (a concurrent writer changed the tag in between) costs one read of those tags and
one more write, which records the batch. A batch of repeats only
writes nothing: BEGIN, lookup, COMMIT.
An entry is written only with the change it records, so the guard that serialises the
writers of a tag gives its entries one version each, without gaps. Two writers of one
tag are serialised by the row lock and the guard in the UPDATE (the row still has the
key the decision was made against: every write, a 404 deletion's included, sets a
greater key, whereas the version does not always change), or by ``ON
CONFLICT DO NOTHING`` for a new tag: the loser re-reads and decides again. Two appliers
of one event are serialised by the record's primary key (key, epoch): the second one's
insert waits for the first to commit and then inserts nothing, and its transaction is
redone (it then finds the event processed). The epoch is read FOR SHARE, so a rotation
to the next one waits for every applier of the old one: both never run at once (and a
lookup whose snapshot predates a rotation it then waited for is read again: ``_LOOKUP``).

Both statements are functions of migration 0009 (replaced by 0010's; the write's rows
as arrays of composite values since 0011), planned once per session and pinned onto the
indexes (``_LOOKUP``).

The record (migration 0004): a 16-byte key hashed from (source, id), a 16-byte
fingerprint, and what rebuilds the outcome (worker/outcomes.py), in a table partitioned
by epoch; worker/partitions.py rotates to a new partition every ``partition_seconds`` and
drops the partitions that ended more than the retention ago.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg
import structlog

from worker import metrics
from worker.db import Connection, classify_db_error, left_no_session_state
from worker.decision import Applied as AppliedDecision
from worker.decision import Change, Decision, TagRecord
from worker.errors import Cause, FatalError, PermanentError, TransientError
from worker.history import NameMemory, StoredColumns, applied_columns, stored_columns
from worker.outcomes import (
    STORED_CHANGES,
    Outcome,
    OutcomeContext,
    RecordRow,
    RecordRows,
    batch_outcomes,
)
from worker.plan import (
    EventKey,
    Item,
    ProcessedRow,
    Superseded,
    TagKey,
    decide_tag,
    events_by_tag,
    survey,
)
from worker.regressions import VersionMemory
from worker.retry import Backoff, count_retry, retrying
from worker.settings import TOMBSTONE_RETENTION_SECONDS
from worker.state import refreshed, repeated_tags
from worker.statistics import Statistics, analyse_table

log = structlog.get_logger("worker.store")

MAX_WRITE_ROUNDS = 8
#: history names (tags, actors, sources) remembered as stored, so that a batch neither
#: sends nor hashes them again (worker/history.py ``NameMemory``; 9.2 MB at most measured
#: with tracemalloc, the set of 100 000 references it replaces took 7.8 MB): a name
#: forgotten is sent again, which costs an index probe, nothing more
NAMES_REMEMBERED = 64_000
MAX_TX_ATTEMPTS = 5
# batches redone because a concurrent applier recorded some of their events first (each
# redo replays those): only appliers racing on the same events, as in a rebalance
MAX_RACE_ATTEMPTS = 50

# One statement: the epoch FOR SHARE, the record's rows of the batch's events and the
# rows of its tags (arrays of composite values: one answer, one round trip). Under READ
# COMMITTED a statement's snapshot is taken before its locks are granted: if a rotation
# was waiting (for appliers of the old epoch holding it FOR SHARE) when this statement
# began, the lock is granted on the rotated row (``epoch``) while the snapshot still shows
# the old one (``seen``) and misses the records those appliers committed meanwhile. Such
# an answer is read again, the lock now held: that snapshot sees them
# (tests/integration/test_store.py stages it). When both agree, every applier of an older
# epoch committed before the rotation to this one, which the snapshot shows; an applier
# of this epoch committing after the snapshot is met by the record's primary key.
# The statement is migration 0009's ``ocitag_store_lookup``, and the write's below its
# ``ocitag_store_write`` (both as 0010 replaced them: each tag a probe of the tag table's
# key; the write's arguments as 0011 made them): functions, so that each is planned once
# per session (a generic plan, not one per execution over every partition: the server's
# CPU per batch of 10 0.6x what it was)
# with planner settings that keep that plan on the indexes however small the tables were
# when it was made (tests/integration/test_plans.py; worker/db.py).
_LOOKUP = "SELECT epoch, seen, processed, tags FROM ocitag_store_lookup($1, $2, $3)"

# The guard: an existing row is updated only while it still has the key the decision
# was made against; a new row is inserted only if nobody inserted it first. What is
# returned was written; what is not must be decided again against the row as it now is.
# ``recorded_at`` (indexed, for tombstone pruning) changes only when the row becomes or
# stays a tombstone: a move of a live tag then changes no indexed column and can be a
# HOT update (no new index entry, the old version pruned without vacuum).
# In the same statement, only if every guard held (``guarded``: the decisions the records
# and entries were built from all stand), the new events' records and the history entries
# of their 200 outcomes with the names those entries introduce (migration 0005): no
# change without its entry, no entry without its change. Data-modifying CTEs run whether
# or not the main statement reads them; ``guarded`` is read by each insert, so the tag
# writes run first (as when they were two statements: the row locks, then the record's
# key). ``recorded`` counts the records inserted: fewer means another applier recorded
# some first.
# The statement is migration 0011's ``ocitag_store_write`` (0010's statement, its rows as
# arrays of composite values); its arguments: the tags ($1, ``ocitag_store_tag_in``: the
# row and the key it was decided against), the time and the epoch ($2, $3), the records
# ($4, ``ocitag_store_record_in``), the new names ($5 refs, $6 names) and the history
# entries ($7, ``ocitag_store_entry_in``). One array per kind of row, not one per column:
# asyncpg checks each element of an array parameter in Python before encoding it, and a
# row is one element (the client's CPU per record 7.3 -> 4.0 us, docs/scaling.md).
_WRITE = "SELECT written, recorded FROM ocitag_store_write($1, $2, $3, $4, $5, $6, $7)"

# the tags whose guard did not hold, read again (their own round trip, only then)
_READ_TAGS = """
SELECT t.repository, t.tag, t.artifact, t.created_by, t.created_on, t.last_modified_by,
       t.last_modified_on, t.version, t.last_event_source, t.last_event_id, t.deleted_on,
       t.deleted_by
FROM ocitags t
JOIN unnest($1::text[], $2::text[]) AS u(r, g) ON t.repository = u.r AND t.tag = u.g
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

_CHANGE_NAMES: dict[int, Change] = {code: change for change, code in STORED_CHANGES.items()}


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
    #: the history names it stored, name → ref (known once it committed)
    names: Mapping[str, int] = field(default_factory=dict)
    #: the rows its first read found, and the rows it wrote (worker/regressions.py)
    read: Mapping[TagKey, TagRecord | None] = field(default_factory=dict)
    wrote: tuple[TagRecord, ...] = ()


class Store:
    """Applies batches through a connection pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        ctx: OutcomeContext,
        *,
        tombstone_retention: timedelta = timedelta(seconds=TOMBSTONE_RETENTION_SECONDS),
    ) -> None:
        self._pool = pool
        self._ctx = ctx
        self._sources = _Sources(ctx.worker_source, ctx.problem_base_uri)
        #: the names of ``ocitag_history_names`` known to be committed (never deleted)
        self._names = NameMemory(NAMES_REMEMBERED)
        #: what this worker last wrote per tag: a row read older is a regression
        self._versions = VersionMemory(tombstone_retention)
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
                    applied = await _apply(
                        conn, self._ctx, self._sources, items, processed_at, names=self._names
                    )
                # committed: plain statements in one transaction leave no session state,
                # so the connection goes back without the reset's round trip
                # (worker/db.py); a failed one still gets it
                left_no_session_state(conn)
                return applied

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

        # what this process remembers from now on was committed after the batch began:
        # its rows may be newer than what the batch read, without any loss
        since = self._versions.mark()
        # another applier recorded some of the events first: that is progress there, and
        # the batch done again replays them, so it has a budget of its own
        applied = await retrying(
            settled,
            Backoff(0.001, 0.05),
            causes={Cause.DB_CLAIMED_MEANWHILE},
            attempts=MAX_RACE_ATTEMPTS,
        )
        self.statistics.recorded(applied.epoch, applied.recorded)
        # now, not processed_at: the store's conflict retries (and the batch's
        # one-at-a-time fallback) reuse it
        regressions = self._versions.check(applied.read, datetime.now(UTC), since)
        if regressions:
            # names committed before the loss may be gone too: send them all again
            self._names.forget()
        for regressed in regressions:
            log.error(
                "store_regressed",
                ocitag_id=regressed.ocitag_id,
                written_version=regressed.written_version,
                stored_version=regressed.stored_version,
                hint="the store lost writes this worker made (a failover to an asynchronous "
                "standby?): ocitag-worker audit, ocitag-worker state repair",
            )
            metrics.STORE_REGRESSIONS.inc()
        self._versions.remember(applied.wrote, processed_at)
        self._names.remember(applied.names)
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
    same for rows it converted). The hash of a source's part is remembered
    (``_source_hash``): a batch's events come from a few sources, and one event's key
    costs then a copy of that state and the id (0.7 us, 1.7 from scratch)."""
    hashed = _source_hash(key[0]).copy()
    hashed.update(key[1].encode())
    return hashed.digest()[:16]


#: SHA-256 states of sources' (length, source) prefixes; emptied past ``_SOURCES_REMEMBERED``
_source_states: dict[str, hashlib._Hash] = {}
_SOURCES_REMEMBERED = 1_024


def _source_hash(source: str) -> hashlib._Hash:
    """The SHA-256 state after (length, source) (never updated: ``event_key`` copies it).
    Bounded: any number of distinct sources only costs hashing them again."""
    state = _source_states.get(source)
    if state is None:
        if len(_source_states) >= _SOURCES_REMEMBERED:
            _source_states.clear()
        encoded = source.encode()
        state = _source_states[source] = hashlib.sha256(len(encoded).to_bytes(4, "big") + encoded)
    return state


def _record_keys(
    firsts: Mapping[EventKey, int],
) -> tuple[dict[int, bytes], dict[bytes, EventKey]]:
    """The record's key of each first occurrence, by its index in the batch, and the
    (source, id) of each record's key."""
    hashed: dict[int, bytes] = {}
    keys: dict[bytes, EventKey] = {}
    for key, index in firsts.items():
        hashed[index] = digest = event_key(key)
        keys[digest] = key
    return hashed, keys


@dataclass(frozen=True, slots=True)
class _Found:
    """The lookup's answer: the epoch held FOR SHARE, the record's rows of the batch's
    events and the stored rows of its tags."""

    epoch: int
    earlier: dict[EventKey, ProcessedRow]
    tags: dict[TagKey, TagRecord]


async def _one_row(conn: Connection, query: str, *args: object) -> asyncpg.Record:
    """The answer of a statement that always returns one row (``_LOOKUP``, ``_WRITE``)."""
    answer: asyncpg.Record | None = await conn.fetchrow(query, *args)
    if answer is None:
        raise FatalError(f"the store's statement returned no row: {query.split()[:4]}")
    return answer


async def _lookup(
    conn: Connection, sources: _Sources, keys: dict[bytes, EventKey], tags: Iterable[TagKey]
) -> _Found:
    wanted = list(tags)
    args = (list(keys), [t[0] for t in wanted], [t[1] for t in wanted])
    answer = await _one_row(conn, _LOOKUP, *args)
    if answer["epoch"] != answer["seen"]:  # a rotation granted the lock: read again
        answer = await _one_row(conn, _LOOKUP, *args)
        if answer["epoch"] != answer["seen"]:  # cannot be while the lock is held
            raise TransientError(Cause.DB_CONFLICT, "the epoch moved under its lock")
    found: dict[EventKey, ProcessedRow] = {}
    for r in answer["processed"]:
        (key, fingerprint, processed_at, status, change, version, created_on, created_by) = r[:8]
        ref, outcome_key, outcome, superseded = r[8:]
        if ref is not None and ref not in sources.names:  # another worker's, added since
            await sources.load(conn, refresh=True)
        published = sources.names.get(ref) if ref is not None else None
        found[keys[key]] = ProcessedRow(
            fingerprint,
            processed_at,
            status,
            outcome_key,
            outcome,
            _CHANGE_NAMES.get(change),
            version,
            created_on,
            created_by,
            published[0] if published else None,
            published[1] if published else None,
            Superseded.from_bytes(superseded) if superseded is not None else None,
        )
    rows = {(t[0], t[1]): TagRecord(*t) for t in answer["tags"]}
    return _Found(answer["epoch"], found, rows)


def _tag_rows(writes: Sequence[tuple[TagRecord, TagRecord | None]]) -> list[tuple[object, ...]]:
    """Each (new row, the row it was decided against) as the write's
    ``ocitag_store_tag_in`` values, in key order."""
    rows: list[tuple[object, ...]] = []
    for record, before in sorted(writes, key=lambda w: (w[0].repository, w[0].tag)):
        rows.append(
            (
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
                before.last_modified_on if before is not None else None,
                before.last_event_source if before is not None else None,
                before.last_event_id if before is not None else None,
            )
        )
    return rows


async def _write(
    conn: Connection,
    epoch: int,
    at: datetime,
    *,
    writes: Sequence[tuple[TagRecord, TagRecord | None]],
    records: Sequence[RecordRow],
    history: StoredColumns,
) -> set[TagKey]:
    """Write the tags under the guard and, if every guard held, insert the new events'
    records (``RecordRows``) and the history entries of their changes;
    returns the tags written. A record already there (another applier's, committed
    meanwhile) makes the whole batch be redone (the entries with it)."""
    answer = await _one_row(
        conn,
        _WRITE,
        _tag_rows(writes),
        at,
        epoch,
        records,
        history.name_refs,
        history.names,
        history.entries,
    )
    written = {(r[0], r[1]) for r in answer["written"]}
    count = len(records)
    if len(written) == len(writes) and answer["recorded"] != count:
        raise TransientError(
            Cause.DB_CLAIMED_MEANWHILE,
            f"{count - answer['recorded']} events recorded meanwhile by another applier",
        )
    return written


async def write_tags(
    conn: Connection, writes: Sequence[tuple[TagRecord, TagRecord | None]], at: datetime
) -> set[TagKey]:
    """Each (new row, the row it was decided against) under the version guard, and
    nothing else (worker/staterepair.py): the batch's write statement with no records
    and no entries. Returns the tags written."""
    return await _write(conn, 0, at, writes=writes, records=(), history=stored_columns(()))


async def read_tags(conn: Connection, tags: Iterable[TagKey]) -> dict[TagKey, TagRecord]:
    keys = list(tags)
    rows = await conn.fetch(_READ_TAGS, [k[0] for k in keys], [k[1] for k in keys])
    return {(r["repository"], r["tag"]): TagRecord(**dict(r)) for r in rows}


def history_columns(
    ctx: OutcomeContext,
    decisions: Mapping[int, Decision],
    new: Sequence[int],
    names: NameMemory | None,
) -> StoredColumns:
    """The history entries of a batch, as the write's arrays: one per 200 outcome (an
    applied decision), in the order of the events."""
    applied = (d for i in new if isinstance(d := decisions.get(i), AppliedDecision))
    return applied_columns(applied, ctx.immutable_tags, names)


@dataclass(frozen=True, slots=True)
class _Round:
    """One round's decisions of the pending tags: the writes, and each tag's row as the
    batch would leave it with the decisions of its events."""

    writes: list[tuple[TagRecord, TagRecord | None]]
    rows: dict[TagKey, TagRecord | None]
    decisions: dict[TagKey, list[Decision]]


def _decide(
    items: Sequence[Item], pending: dict[TagKey, list[int]], stored: dict[TagKey, TagRecord]
) -> _Round:
    """Fold each pending tag's events against its stored row. Pure."""
    round_ = _Round([], {}, {})
    for tag, indexes in pending.items():
        before = stored.get(tag)
        after, decisions = decide_tag(before, items, indexes)
        round_.rows[tag] = after if after is not None else before
        round_.decisions[tag] = decisions
        if after is not None and after is not before:
            round_.writes.append((after, before))
    return round_


async def _apply(
    conn: Connection,
    ctx: OutcomeContext,
    sources: _Sources,
    items: Sequence[Item],
    at: datetime,
    *,
    names: NameMemory | None = None,
) -> Applied:
    """One transaction's work. Each round decides the pending tags, builds every outcome,
    record and entry from the decisions so far, and writes them in one statement; tags
    whose guard did not hold are read again and decided again (their records and entries
    were not written: the next round's are)."""
    # every tag of the batch: those of new events are decided, those of repeated applied
    # changes give their state records (worker/state.py ``refreshed``)
    firsts, tags = survey(items)
    hashed, keys = _record_keys(firsts)
    found = await _lookup(conn, sources, keys, tags)
    earlier, stored = found.earlier, found.tags
    new = sorted(index for key, index in firsts.items() if key not in earlier)
    pending = events_by_tag(items, new)
    current: dict[TagKey, TagRecord | None] = {
        tag: stored.get(tag) for tag in repeated_tags(items, earlier) if tag not in pending
    }
    # the rows the first read found, for worker/regressions.py (None: no row)
    read = {tag: stored.get(tag) for tag in (*pending, *current)}
    wrote: list[TagRecord] = []
    decided: dict[int, Decision] = {}
    for round_number in range(MAX_WRITE_ROUNDS):
        if round_number:
            stored = await read_tags(conn, pending)
        round_ = _decide(items, pending, stored)
        decisions = dict(decided)
        for tag, tag_decisions in round_.decisions.items():
            decisions.update(zip(pending[tag], tag_decisions, strict=True))
        outcomes = batch_outcomes(
            ctx, items, new=new, decisions=decisions, earlier=earlier, processed_at=at
        )
        if any(o.replay for o in outcomes):
            rows_now = {**current, **round_.rows}
            outcomes = refreshed(outcomes, {f"{r}:{t}": row for (r, t), row in rows_now.items()})
        if not new:
            return Applied(outcomes, found.epoch, 0, read=read)
        records = RecordRows(sources.ids[sources.current])
        for i in new:
            records.add(hashed[i], items[i], decisions.get(i), outcomes[i])
        history = history_columns(ctx, decisions, new, names)
        written = await _write(
            conn, found.epoch, at, writes=round_.writes, records=records.rows, history=history
        )
        conflicted = {(w.repository, w.tag) for w, _ in round_.writes} - written
        # a failed round's other tags are written too: they stay in the transaction
        wrote.extend(w for w, _ in round_.writes if (w.repository, w.tag) in written)
        if not conflicted:
            names_stored = history.new_names
            return Applied(outcomes, found.epoch, len(new), names_stored, read, tuple(wrote))
        count_retry(Cause.DB_VERSION_CONFLICT, len(conflicted))
        for tag, row in round_.rows.items():
            if tag not in conflicted:
                decided.update(zip(pending[tag], round_.decisions[tag], strict=True))
                current[tag] = row
        pending = {tag: pending[tag] for tag in conflicted}
    raise TransientError(Cause.DB_VERSION_CONFLICT, f"{len(pending)} tags kept changing under us")
