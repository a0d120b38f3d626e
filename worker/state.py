"""The state topic's records (docs/subscribers.md): the one place that turns a tag's
record into what the state topic holds for it, and the one place that reads it back.
Pure: no I/O, no clock.

- ``upsert``: a live record, keyed by its OCITag ID; the value is the seed's OCITag
  JSON plus ``"version"``; ``tombstone``: a deleted (or never seen) tag, a null value.
  Every record carries the version it shows in a ``version`` header too (a tombstone
  has no value to carry it), and ``content-type: application/json``; a record built
  from a row carries the key of the event that made it (``event-time``,
  ``event-source``, ``event-id``) and a tombstone its deletion's actor (``deleted-by``)
  and what the row keeps of the tag's last life (``artifact``, ``created-by``,
  ``created-on``), so that ``ocitag-worker state repair`` (worker/staterepair.py) can
  put the exact row back after a failover lost it.
- ``refreshed``: a batch's repeats of applied changes get the tag's record as it now is
  (after the batch), not the one their first processing produced: a repeat can arrive
  after later changes of its tag, and a compacted topic keeps the LAST record per key.
- ``fold`` and ``differences``: a reader's view (the last value per key, keys whose
  last value is null dropped) and how it differs from ``live_ocitags``
  (``ocitag-worker state verify``); ``last_records``: the last record per key,
  tombstones and headers kept (``ocitag-worker state repair``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import orjson

from worker.decision import TagRecord
from worker.events import Invalid
from worker.frozen import fast_init
from worker.plan import EventKey, Item, ProcessedRow, TagKey
from worker.timefmt import format_rfc3339, parse_rfc3339

if TYPE_CHECKING:  # worker.outcomes carries these records in its Outcome
    from worker.outcomes import Outcome

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CONTENT_TYPE = b"application/json"
VERSION_HEADER = "version"
#: the key (time, source, id) of the event that made the record, and a deletion's actor
EVENT_HEADERS = ("event-time", "event-source", "event-id")
DELETED_BY_HEADER = "deleted-by"
#: what a tombstone row keeps of the tag's last life (the value is null)
KEPT_HEADERS = ("artifact", "created-by", "created-on")
#: how a field of a record that is not a JSON object is named in a difference
UNREADABLE = "(value)"

Kind = Literal["upsert", "tombstone"]


@fast_init
@dataclass(frozen=True, slots=True)
class StateRecord:
    """One record of the state topic: key, value (None: a tombstone), the version, and
    the row it was built from (None: a tombstone of a pruned row; no event headers)."""

    key: bytes
    value: bytes | None
    version: int | None
    row: TagRecord | None = None

    @property
    def kind(self) -> Kind:
        return "tombstone" if self.value is None else "upsert"

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        headers = [("content-type", CONTENT_TYPE)]
        if self.version is not None:
            headers.append((VERSION_HEADER, str(self.version).encode()))
        row = self.row
        if row is not None:
            key = (format_rfc3339(row.last_modified_on), row.last_event_source, row.last_event_id)
            headers.extend((name, v.encode()) for name, v in zip(EVENT_HEADERS, key, strict=True))
            if self.value is None:
                headers.extend(_deletion_headers(row))
        return headers


def _deletion_headers(row: TagRecord) -> list[tuple[str, bytes]]:
    """A tombstone's deletion actor, and what the row keeps of the tag's last life."""
    headers = []
    if row.deleted_by is not None:
        headers.append((DELETED_BY_HEADER, row.deleted_by.encode()))
    if row.artifact is not None and row.created_by is not None and row.created_on is not None:
        kept = (row.artifact, row.created_by, format_rfc3339(row.created_on))
        headers.extend((name, v.encode()) for name, v in zip(KEPT_HEADERS, kept, strict=True))
    return headers


def state_value(record: TagRecord, ocitag: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What the topic and ``live_ocitags`` both say of a live record; ``ocitag``: its
    ``as_ocitag()`` when the caller has it already (a 200's outcome data)."""
    return {**(record.as_ocitag() if ocitag is None else ocitag), "version": record.version}


def upsert(record: TagRecord, ocitag: Mapping[str, str] | None = None) -> StateRecord:
    key = f"{record.repository}:{record.tag}".encode()
    return StateRecord(key, orjson.dumps(state_value(record, ocitag)), record.version, record)


def tombstone(ocitag_id: str, version: int | None, row: TagRecord | None = None) -> StateRecord:
    """A deleted tag; ``row`` (the tombstone row) gives the deletion's headers."""
    return StateRecord(ocitag_id.encode(), None, version, row)


def current(ocitag_id: str, row: TagRecord | None) -> StateRecord:
    """The record for a tag as it now is: its row, a tombstone if it is deleted or has
    no row (a pruned tombstone: the version is gone with it)."""
    if row is None:
        return tombstone(ocitag_id, None)
    if not row.live:
        return tombstone(ocitag_id, row.version, row)
    return upsert(row)


def refreshed(outcomes: Sequence[Outcome], rows: Mapping[str, TagRecord | None]) -> list[Outcome]:
    """``outcomes`` with each repeated applied change's state record replaced by its
    tag's record as it now is (``rows`` by OCITag ID, read after the batch's writes).
    A first processing keeps the record it applied: the batch's order is the order of
    its changes, and the last one of a tag is its row."""
    out = []
    for outcome in outcomes:
        ocitag_id = _repeated_change(outcome)
        out.append(
            outcome
            if ocitag_id is None
            else replace(outcome, state=current(ocitag_id, rows.get(ocitag_id)))
        )
    return out


def repeated_tags(items: Sequence[Item], earlier: Mapping[EventKey, ProcessedRow]) -> list[TagKey]:
    """The tags of the items that repeat an applied change processed by an earlier batch
    (its record says 200): ``refreshed`` needs their rows as the batch leaves them. (A
    repeat of an item of the same batch is of a tag the batch decides anyway.)"""
    tags: dict[TagKey, None] = {}
    for item in items:
        row = earlier.get(item.key)
        if row is not None and row.status == 200 and not isinstance(item.event, Invalid):
            tags[(item.event.repository, item.event.tag)] = None
    return list(tags)


def _repeated_change(outcome: Outcome) -> str | None:
    """The OCITag ID of a repeated applied change (a 200 given again), else None."""
    if outcome.replay and outcome.status == 200 and outcome.key is not None:
        return outcome.key.decode()
    return None


# ---- reading it back


def fold(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, dict[str, Any]]:
    """A reader's map after the records (key, value) in topic order: the last value per
    key, keys whose last value is null dropped. A value that is not a JSON object is
    kept as ``{UNREADABLE: its text}`` so that a comparison shows it."""
    state: dict[str, dict[str, Any]] = {}
    for key, value in records:
        if key is None:
            continue
        name = key.decode("utf-8", "replace")
        if value is None:
            state.pop(name, None)
            continue
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            parsed = {UNREADABLE: value.decode("utf-8", "replace")[:200]}
        state[name] = parsed
    return state


@dataclass(frozen=True, slots=True)
class LastRecord:
    """The last record of one key on the topic: its value as a reader parses it (None: a
    tombstone), its version (the header's), and its headers by name (records written
    before the event headers have none of them)."""

    ocitag_id: str
    value: Mapping[str, Any] | None
    version: int | None
    headers: Mapping[str, str]


TopicRecord = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]


def last_records(records: Iterable[TopicRecord]) -> dict[str, LastRecord]:
    """Per key (records: key, value, headers, in topic order), tombstones kept, the
    record of the LATEST CHANGE: the greatest event key (``event-time``, ``event-source``,
    ``event-id``), every applied change having a greater key than the one before; records
    without those headers (written before them) count as older than any with them, and
    among themselves the last wins. Not simply the last record: a redelivered change
    republishes its tag's row as it now is (``refreshed``), which after a failover that
    lost writes is the stale row, older than records already on the topic."""
    found: dict[str, tuple[tuple[int, int, str, str], LastRecord]] = {}
    for position, (key, value, headers) in enumerate(records):
        if key is None:
            continue
        name = key.decode("utf-8", "replace")
        named = {h: v.decode("utf-8", "replace") for h, v in headers}
        text = named.get(VERSION_HEADER, "")
        version = int(text) if text.isdigit() else None
        parsed = None if value is None else fold([(key, value)]).get(name)
        rank = _change_order(named, position)
        kept = found.get(name)
        if kept is None or rank >= kept[0]:
            found[name] = (rank, LastRecord(name, parsed, version, named))
    return {name: record for name, (_, record) in found.items()}


def _change_order(headers: Mapping[str, str], position: int) -> tuple[int, int, str, str]:
    """How a record ranks among its key's: by event key (time in microseconds, source,
    id) when it has one, else after none of those, by position."""
    time, source, event_id = (headers.get(name) for name in EVENT_HEADERS)
    if time is None or source is None or event_id is None:
        return (0, position, "", "")
    micros = (parse_rfc3339(time) - _EPOCH) // timedelta(microseconds=1)
    return (1, micros, source, event_id)


@dataclass(frozen=True, slots=True)
class Difference:
    """One tag on which the topic and ``live_ocitags`` disagree: ``missing`` (live, not
    on the topic), ``extra`` (on the topic, not live) or ``differing`` (both: the fields
    that differ, each (topic's, live's); an absent field is None)."""

    ocitag_id: str
    kind: Literal["missing", "extra", "differing"]
    fields: Mapping[str, tuple[Any, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "ocitag_id": self.ocitag_id,
            "difference": self.kind,
            "fields": {name: {"topic": t, "live": v} for name, (t, v) in self.fields.items()},
        }


def differences(
    topic: Mapping[str, Mapping[str, Any]], live: Mapping[str, Mapping[str, Any]]
) -> list[Difference]:
    """Every tag on which the folded topic and the live records disagree, by OCITag ID."""
    found = []
    for ocitag_id in sorted(topic.keys() | live.keys()):
        mine, theirs = topic.get(ocitag_id), live.get(ocitag_id)
        if mine is None:
            found.append(Difference(ocitag_id, "missing", {}))
        elif theirs is None:
            found.append(Difference(ocitag_id, "extra", {}))
        else:
            fields = {
                name: (mine.get(name), theirs.get(name))
                for name in sorted(mine.keys() | theirs.keys())
                if mine.get(name) != theirs.get(name)
            }
            if fields:
                found.append(Difference(ocitag_id, "differing", fields))
    return found
