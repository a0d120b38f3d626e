"""Pure steps of applying a batch: who is a duplicate of whom and the decisions per tag.
The store does the I/O around them; worker/outcomes.py turns what happened into
outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from worker.decision import Change, Decision, TagRecord, fold
from worker.events import Invalid, RawRecord, TagDeleted, TagMoved
from worker.frozen import fast_init

EventKey = tuple[str, str]  # (source, id)
TagKey = tuple[str, str]  # (repository, tag)
Accepted = TagMoved | TagDeleted | Invalid


@fast_init
@dataclass(frozen=True, slots=True)
class Item:
    """One record of a batch that has an identity (it is stored as processed)."""

    record: RawRecord
    event: Accepted

    @property
    def key(self) -> EventKey:
        return (self.event.source, self.event.id)


@fast_init
@dataclass(frozen=True, slots=True)
class Superseded:
    """What rebuilds a superseded event's 409 with its repeat (migration 0006): the key
    (time, source, id) of the row that was newer and whether it was live, the first
    delivery's content mode and its record (the problem's ``instance``)."""

    on: datetime
    source: str
    id: str
    live: bool
    binary: bool
    instance: str

    def to_bytes(self) -> bytes:
        """The record's ``superseded`` column (``superseded_bytes``)."""
        return superseded_bytes(
            self.on,
            self.source,
            self.id,
            live=self.live,
            binary=self.binary,
            instance=self.instance,
        )

    @classmethod
    def from_bytes(cls, value: bytes) -> Superseded:
        micros, live, binary, source, event_id, instance = orjson.loads(value)
        return cls(_EPOCH + micros * _MICROSECOND, source, event_id, live, binary, instance)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def superseded_bytes(
    on: datetime, source: str, event_id: str, *, live: bool, binary: bool, instance: str
) -> bytes:
    """``Superseded(on, source, event_id, live, binary, instance).to_bytes()`` without
    the object (the store's write builds one per superseded event): a JSON array, the
    time as integer microseconds since the epoch (exact, and shorter than its text)."""
    micros = (on - _EPOCH) // _MICROSECOND
    return orjson.dumps([micros, live, binary, source, event_id, instance])


@fast_init
@dataclass(frozen=True, slots=True)
class ProcessedRow:
    """What ``processed_events`` holds for an event processed earlier: enough to tell a
    replay from an id reuse and to give the first outcome again, byte for byte — either
    the outcome's bytes, or (a tag-moved event's 200, a superseded event's 409) what
    rebuilds it with the repeat (worker/outcomes.py ``processed_row`` and ``replayed``)."""

    fingerprint: bytes  # the first STORED_FINGERPRINT_BYTES of the content fingerprint
    processed_at: datetime
    status: int
    outcome_key: bytes | None = None
    outcome: bytes | None = None  # kept as bytes; None: rebuilt from what follows
    change: Change | None = None
    version: int | None = None
    created_on: datetime | None = None  # None: the record was created by this event
    created_by: str | None = None
    worker_source: str | None = None
    #: a rebuilt 409's problem base URI (with ``worker_source``: its first publication's)
    problem_base: str | None = None
    superseded: Superseded | None = None


def first_occurrences(items: Sequence[Item]) -> dict[EventKey, int]:
    """The index of the first item of each (source, id); later ones are duplicates."""
    return survey(items)[0]


def survey(items: Sequence[Item]) -> tuple[dict[EventKey, int], list[TagKey]]:
    """In one pass over a batch: ``first_occurrences``, and every tag its tag events name
    (duplicates' too), each once, in the order first named."""
    firsts: dict[EventKey, int] = {}
    tags: dict[TagKey, None] = {}
    for index, item in enumerate(items):
        event = item.event
        key = (event.source, event.id)
        if key not in firsts:
            firsts[key] = index
        if not isinstance(event, Invalid):
            tags[(event.repository, event.tag)] = None
    return firsts, list(tags)


def events_by_tag(items: Sequence[Item], indexes: Sequence[int]) -> dict[TagKey, list[int]]:
    """The given tag events (moves and deletions) grouped per tag, in batch (= delivery)
    order."""
    groups: dict[TagKey, list[int]] = {}
    for index in indexes:
        event = items[index].event
        if not isinstance(event, Invalid):
            groups.setdefault((event.repository, event.tag), []).append(index)
    return groups


def decide_tag(
    stored: TagRecord | None, items: Sequence[Item], indexes: Sequence[int]
) -> tuple[TagRecord | None, list[Decision]]:
    events = [items[i].event for i in indexes]
    return fold(stored, [e for e in events if not isinstance(e, Invalid)])
