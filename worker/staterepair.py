"""``ocitag-worker state repair``: put back in the store what the state topic says the
worker acknowledged, after a failover to an asynchronous standby lost it
(docs/replicated.md).

The worker produces a tag's state record before it commits the input offset, after the
database transaction committed (docs/subscribers.md). A standby promoted without the
last transactions leaves the topic ahead of the store: the topic's latest change of a
tag shows a version the row no longer has. This command folds the topic by key (per
key the record of the latest change, by event key, tombstones kept:
worker/state.py ``last_records``), reads the rows of those tags and decides per tag
(``decide``, pure, the one home of the rule):

- the topic's version is greater than the row's (or there is no row): **restore** the
  row to the topic's record (a tombstone: the row deleted at that version), through the
  store's guarded write (worker/store.py ``write_tags``: written only while the row
  still has the key it was decided against; a row changed meanwhile is read and decided
  again, so a newer row always wins and no tag ever moves backwards), with one history
  entry in the same transaction: ``baseline`` for a live record (history restarts from
  it: the lost versions in between are not known), ``deleted`` for a deletion;
- otherwise nothing: in step, or the store is newer (a later event was applied since),
  or a deletion the store has no row for and the topic no record to rebuild;
- **conflict**: the topic's version is greater, but the row holds a later event key
  (time, source, id) than the topic's record: an event applied after the promotion
  against the older row without changing its version (a 404 deletion of a tag whose
  lost re-creation the store no longer had, say). Neither side is the truth (the
  events in between were decided against a stale row): nothing is written, the tag is
  reported for ``ocitag-worker reconcile``;
- **unrepairable**: the topic's record cannot be turned back into a row (a value that is
  not a record, or a tombstone written before the event headers: its deletion's time is
  unknown).

With ``--apply`` each restored row's state record is also produced again, so that
readers whose last record was the stale row (republished by a redelivery after the
failover) end on the restored one. Without ``--apply`` it only says what it would do.
Exit 0: nothing to restore (or, with ``--apply``, everything restored); 3: restores
pending (dry run), or some tag in conflict or unrepairable. Run it after a failover,
before the topic's compaction and retention have dropped what it needs, and while the
worker runs or not (the guard settles races).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, TextIO

import orjson

from worker.db import Connection, classify_db_error
from worker.decision import TagRecord
from worker.errors import Cause
from worker.history import Entry, stored_columns
from worker.kafka import new_producer, start_whole
from worker.retry import Backoff, retrying
from worker.settings import Settings
from worker.startup import create_pool
from worker.state import (
    DELETED_BY_HEADER,
    EVENT_HEADERS,
    KEPT_HEADERS,
    LastRecord,
    current,
    last_records,
)
from worker.statetopic import read_state_topic
from worker.store import read_tags, write_tags
from worker.timefmt import format_rfc3339, parse_rfc3339

#: the event key of a live record written before the state topic carried it
#: (``event-source``/``event-id`` headers): only a tie in time compares it
REPAIR_SOURCE = "urn:ocitag-worker:state-repair"
#: a row changed between the read and the guarded write is decided again, this often
MAX_ROUNDS = 5

Action = Literal["restore", "none", "conflict", "unrepairable"]


@dataclass(frozen=True, slots=True)
class Repair:
    """What to do with one tag: ``record`` is the row to write (restore only)."""

    ocitag_id: str
    action: Action
    reason: str
    topic_version: int | None
    store_version: int | None
    record: TagRecord | None = None

    def as_json(self) -> dict[str, Any]:
        record = self.record
        return {
            "record": "repair",
            "ocitag_id": self.ocitag_id,
            "action": self.action,
            "reason": self.reason,
            "topic_version": self.topic_version,
            "store_version": self.store_version,
            "deleted": record is not None and not record.live,
        }


def decide(last: LastRecord, row: TagRecord | None) -> Repair:
    """The topic's last record of a tag against its row (None: no row). Pure."""
    stored = row.version if row is not None else None
    topic = last.version
    if topic is None:
        said: Said = ("none", "the topic's record has no version (a pruned tombstone)", None)
    elif stored is not None and stored >= topic:
        said = ("none", "in step" if stored == topic else "the store is newer", None)
    else:
        said = _wanted(last, row, topic)
        wanted = said[2]
        if row is not None and wanted is not None and row.order_key > wanted.order_key:
            said = ("conflict", _conflict(row), None)
    action, reason, record = said
    return Repair(last.ocitag_id, action, reason, topic, stored, record)


Said = tuple[Action, str, TagRecord | None]


def _conflict(row: TagRecord) -> str:
    on, source, event_id = row.order_key
    return (
        f"the store applied a later event since (time {format_rfc3339(on)}, source "
        f"{source}, id {event_id}): reconcile the tag"
    )


def _wanted(last: LastRecord, row: TagRecord | None, topic: int) -> Said:
    """The row the topic's record (ahead of the store's) asks for."""
    if last.value is None:
        deleted = _deletion(last, row, topic)
        if deleted is None and row is None:  # absent either way for a reader
            return ("none", "deleted on the topic, no row and no record to restore", None)
        if deleted is None:
            why = "a tombstone without the event headers: its deletion's time is unknown"
            return ("unrepairable", why, None)
        return ("restore", "the topic deleted it", deleted)
    try:
        record = _live(last)
    except (KeyError, TypeError, ValueError) as exc:
        return ("unrepairable", f"the topic's value is not a record: {exc}", None)
    if record.version != topic:
        return ("unrepairable", f"value version {record.version} != header {topic}", None)
    return ("restore", "the topic is ahead of the store", record)


def _live(last: LastRecord) -> TagRecord:
    """The row of a live record: the value, and the event key from its headers."""
    value = last.value
    assert value is not None
    time, source, event_id = (last.headers.get(h) for h in EVENT_HEADERS)
    version = value["version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise TypeError(f"version {version!r}")
    on = parse_rfc3339(str(value["last_modified_on"]))
    if time is not None and parse_rfc3339(time) != on:
        raise ValueError(f"event-time {time} is not last_modified_on")
    return TagRecord(
        repository=str(value["repository"]),
        tag=str(value["tag"]),
        artifact=str(value["artifact"]),
        created_by=str(value["created_by"]),
        created_on=parse_rfc3339(str(value["created_on"])),
        last_modified_by=str(value["last_modified_by"]),
        last_modified_on=on,
        version=version,
        last_event_source=source if source is not None else REPAIR_SOURCE,
        last_event_id=event_id if event_id is not None else f"v{version}",
    )


def _deletion(last: LastRecord, row: TagRecord | None, topic: int) -> TagRecord | None:
    """The row deleted at the topic's version, with the deletion's key and actor (None
    without them), and the artifact and creation of the tag's last life (the
    tombstone's headers; the row's if it has none of them; None if neither: a creation
    and its deletion both lost, written before these headers)."""
    time, source, event_id = (last.headers.get(h) for h in EVENT_HEADERS)
    actor = last.headers.get(DELETED_BY_HEADER)
    if time is None or source is None or event_id is None or actor is None:
        return None
    on = parse_rfc3339(time)
    artifact, created_by, created_on = (last.headers.get(h) for h in KEPT_HEADERS)
    if artifact is not None and created_by is not None and created_on is not None:
        repository, tag = _tag_key(last.ocitag_id)
        kept = (artifact, created_by, parse_rfc3339(created_on))
        row = TagRecord(repository, tag, *kept, actor, on, topic, source, event_id)
    if row is None:
        return None
    return replace(
        row,
        last_modified_by=actor,
        last_modified_on=on,
        version=topic,
        last_event_source=source,
        last_event_id=event_id,
        deleted_on=on,
        deleted_by=actor,
    )


def entry(record: TagRecord, recorded_at: datetime) -> Entry | None:
    """The history entry of a restore (docs/history.md): ``baseline`` for a live record,
    ``deleted`` for a deletion; none for a deletion of a row that was never live (no
    artifact to name)."""
    if record.artifact is None:
        return None
    deleted = not record.live
    by = record.deleted_by if deleted else record.last_modified_by
    assert by is not None
    return Entry(
        version=record.version,
        change="deleted" if deleted else "baseline",
        artifact=record.artifact,
        by=by,
        at=record.last_modified_on,
        recorded_at=recorded_at,
        source=record.last_event_source,
        event_id=record.last_event_id,
        repointed=False,
    )


def plan(
    lasts: Mapping[str, LastRecord], rows: Mapping[tuple[str, str], TagRecord]
) -> list[Repair]:
    """``decide`` for every tag of the topic, by OCITag ID. Pure."""
    return [decide(last, rows.get(_tag_key(oid))) for oid, last in sorted(lasts.items())]


def _tag_key(ocitag_id: str) -> tuple[str, str]:
    repository, _, tag = ocitag_id.rpartition(":")
    return repository, tag


# ---- the edge

# The names a restore's entry introduces, then the entry and a baseline's creation
# beside it (migrations 0005, 0007); two statements, not the applier's one (worker/store.py
# ``_WRITE``): a restore is rare, a round trip more costs nothing here.
_NAMES = """
INSERT INTO ocitag_history_names (ref, name) SELECT * FROM unnest($1::bigint[], $2::text[])
ON CONFLICT (ref) DO NOTHING
"""
_ENTRY = """
WITH h AS (
    SELECT * FROM unnest($1::timestamptz[], $2::bigint[], $3::bigint[], $4::bigint[],
                         $5::integer[], $6::smallint[], $7::bytea[], $8::bytea[])
        AS h(ha, ht, hb, hs, hv, hc, hx, hi)
), baseline AS (
    INSERT INTO ocitag_history_baselines (tag_ref, version, created_by, created_on)
    SELECT ht, hv, $10, $11 FROM h WHERE hc = 0
    ON CONFLICT (tag_ref, version)
    DO UPDATE SET created_by = excluded.created_by, created_on = excluded.created_on
)
INSERT INTO ocitag_history (at, recorded_at, tag_ref, by_ref, source_ref, version, epoch,
                            change, artifact, event_id)
SELECT ha, $9, ht, hb, hs, hv, $12, hc, hx, hi
FROM h
"""
# first in the transaction, as the applier does (worker/store.py ``_LOOKUP``): the epoch,
# then the tag's row; the other order can deadlock with an applier and a rotation
_EPOCH = "SELECT epoch FROM processed_current FOR SHARE"
#: attempts of one restore that met a deadlock or a serialization failure
RESTORE_ATTEMPTS = 5


async def _restore(conn: Connection, repair: Repair, at: datetime) -> Repair:
    """Write one restore under the guard, with its history entry, in one transaction; a
    row changed meanwhile is read and decided again (it may now be in step or newer)."""
    record = repair.record
    assert record is not None
    key = (record.repository, record.tag)
    for _ in range(MAX_ROUNDS):
        async with conn.transaction(isolation="read_committed"):
            epoch = await conn.fetchval(_EPOCH)
            before = (await read_tags(conn, [key])).get(key)
            if before is not None and before.version >= record.version:
                return replace(repair, action="none", reason="the store is newer", record=None)
            if before is not None and before.order_key > record.order_key:
                return replace(repair, action="conflict", reason=_conflict(before), record=None)
            if not await write_tags(conn, [(record, before)], at):
                continue  # changed between the read and the write: again
            found = entry(record, at)
            if found is not None:
                columns = stored_columns([(repair.ocitag_id, found)])
                await conn.execute(_NAMES, columns.name_refs, columns.names)
                await conn.execute(
                    _ENTRY,
                    *columns.columns,
                    at,
                    record.created_by,
                    record.created_on,
                    epoch,
                )
            return replace(repair, store_version=before.version if before else None)
    return replace(repair, action="unrepairable", reason="the row kept changing", record=None)


@dataclass(frozen=True, slots=True)
class Repaired:
    records: int  # read from the topic
    repairs: list[Repair]  # every tag that needs or needed something (no "none")
    applied: bool

    def summary(self) -> dict[str, Any]:
        counts = {"restore": 0, "conflict": 0, "unrepairable": 0}
        for repair in self.repairs:
            counts[repair.action] = counts.get(repair.action, 0) + 1
        return {
            "record": "summary",
            "topic_records": self.records,
            "applied": self.applied,
            **counts,
        }

    @property
    def exit_code(self) -> int:
        """0: nothing left to do; 3 (findings): restores pending, or tags in conflict or
        unrepairable."""
        pending = any(r.action == "restore" for r in self.repairs) and not self.applied
        stuck = any(r.action in ("conflict", "unrepairable") for r in self.repairs)
        return 3 if pending or stuck else 0


async def repair(settings: Settings, *, apply: bool) -> Repaired:
    """Read the topic to its end offsets, the rows of its tags, decide, and (``apply``)
    write the restores."""
    if not settings.topics.state_topic:
        raise ValueError("OCITAG_STATE_TOPIC is empty (the state topic is off): nothing to repair")
    records = await read_state_topic(settings)
    lasts = last_records(records)
    pool = await create_pool(
        settings, "state repair", give_up_after=settings.lifecycle.startup_timeout_seconds
    )
    try:
        async with pool.acquire() as conn:
            rows = await read_tags(conn, [_tag_key(oid) for oid in lasts])
            found = [r for r in plan(lasts, rows) if r.action != "none"]
            if apply:
                at = datetime.now(UTC)
                found = [
                    await retrying(
                        partial(_restore, conn, r, at),
                        Backoff(0.01, 0.5),
                        classify=lambda exc: classify_db_error(exc, "state repair"),
                        causes={Cause.DB_CONFLICT},
                        attempts=RESTORE_ATTEMPTS,
                    )
                    if r.action == "restore"
                    else r
                    for r in found
                ]
                found = [r for r in found if r.action != "none"]
    finally:
        await pool.close()
    if apply:
        await _republish(settings, [r for r in found if r.action == "restore"])
    return Repaired(len(records), found, apply)


async def _republish(settings: Settings, restored: list[Repair]) -> None:
    """Each restored row's state record, produced again (acknowledged by every in-sync
    replica): a reader's view is the last record per key, which after the failover may
    be a stale row republished by a redelivery (``last_records``); now it is the row.
    For readers it is a duplicate at worst (docs/subscribers.md)."""
    producer = new_producer(settings)
    try:
        await start_whole(producer.start, producer.stop)
        sent = []
        for repair in restored:
            assert repair.record is not None
            state = current(repair.ocitag_id, repair.record)
            sent.append(
                await producer.send(
                    settings.topics.state_topic, state.value, key=state.key, headers=state.headers
                )
            )
        for future in sent:
            await future
    finally:
        await producer.stop()


def print_repaired(repaired: Repaired, as_json: bool | None, stream: TextIO | None = None) -> None:
    """JSON lines when asked or when ``stream`` is not a terminal; else readable lines."""
    out = stream or sys.stdout
    if as_json or (as_json is None and not out.isatty()):
        for r in repaired.repairs:
            out.write(orjson.dumps(r.as_json()).decode() + "\n")
        out.write(orjson.dumps(repaired.summary()).decode() + "\n")
        out.flush()
        return
    verb = "restored" if repaired.applied else "would restore"
    for r in repaired.repairs:
        what = verb if r.action == "restore" else r.action
        out.write(
            f"{what:<14} {r.ocitag_id}: topic v{r.topic_version}, store "
            f"{'no row' if r.store_version is None else f'v{r.store_version}'} ({r.reason})\n"
        )
    summary = repaired.summary()
    out.write(
        f"state topic {repaired.records} records: {summary['restore']} {verb}, "
        f"{summary['conflict']} in conflict, {summary['unrepairable']} unrepairable\n"
    )
    out.flush()
