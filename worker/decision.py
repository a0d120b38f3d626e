"""The apply / supersede / precondition / deletion decision of the contract
(docs/contract.md "Semantics"). Pure.

``decide(stored, event)`` is the whole rule for one event (a move or a deletion) against
the tag's current row; ``fold`` runs it over the events of one tag in delivery order.
The store runs the fold inside a transaction and lets PostgreSQL settle races on the
written rows.

The rule, in order:
1. the event's key (time, source, id) must be greater than the row's (live or
   tombstone), else 409 superseded;
2. a deletion of a tag that is not live is 404, and still records its key (a tombstone,
   at version 0 for a tag never seen) so that older moves stay superseded;
3. preconditions, against the live record (a deleted tag does not exist: version 0, no
   artifact), else 412;
4. apply: a move creates (also over a tombstone, the version counting on), updates or
   leaves the artifact unchanged; a deletion turns the live record into a tombstone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from worker.events import OrderKey, TagDeleted, TagEvent, TagMoved
from worker.frozen import fast_init
from worker.problems import ErrorItem, Problem, ProblemKind
from worker.timefmt import format_rfc3339

Change = Literal["created", "updated", "unchanged", "deleted"]


@fast_init
@dataclass(frozen=True, slots=True)
class TagRecord:
    """A row of ``ocitags``: the seed's OCITag plus version, the last recorded key and
    the deletion state. A tombstone (``deleted_on`` set) keeps the last artifact and
    creation; one recorded for a tag never seen live has neither (version 0)."""

    repository: str
    tag: str
    artifact: str | None
    created_by: str | None
    created_on: datetime | None
    last_modified_by: str
    last_modified_on: datetime
    version: int
    last_event_source: str
    last_event_id: str
    deleted_on: datetime | None = None
    deleted_by: str | None = None

    @property
    def order_key(self) -> OrderKey:
        return (self.last_modified_on, self.last_event_source, self.last_event_id)

    @property
    def live(self) -> bool:
        return self.deleted_on is None

    def as_ocitag(self) -> dict[str, str]:
        """The seed's OCITag, members in the schema's order. Only a record that was
        live has one (a tombstone of a never-seen tag does not)."""
        if self.artifact is None or self.created_by is None or self.created_on is None:
            raise ValueError(f"{self.repository}:{self.tag} has never been live: no OCITag")
        modified = format_rfc3339(self.last_modified_on)
        return {
            "artifact": self.artifact,
            "repository": self.repository,
            "tag": self.tag,
            "created_by": self.created_by,
            # a creation's two times are one (formatting is most of this, once per outcome)
            "created_on": modified
            if self.created_on == self.last_modified_on
            else format_rfc3339(self.created_on),
            "last_modified_by": self.last_modified_by,
            "last_modified_on": modified,
        }


@fast_init
@dataclass(frozen=True, slots=True)
class Applied:
    record: TagRecord
    change: Change
    #: for a deletion, the live record it removed (the outcome's data)
    removed: TagRecord | None = None
    #: for a move that points the tag elsewhere than it last pointed (live, or before
    #: its deletion): the artifact it pointed at (worker/history.py ``repointed``)
    replaced: str | None = None

    @property
    def recorded(self) -> TagRecord:
        """The row as this decision leaves it."""
        return self.record


@fast_init
@dataclass(frozen=True, slots=True)
class Rejected:
    problem: Problem
    #: the row as a rejection that still records something leaves it (a deletion of a
    #: tag that is not live records its key); None: nothing changes
    record: TagRecord | None = None
    #: for a superseded event, the row whose key was greater (what rebuilds the 409)
    newer: TagRecord | None = None

    @property
    def recorded(self) -> TagRecord | None:
        return self.record


Decision = Applied | Rejected


def decide(stored: TagRecord | None, event: TagEvent) -> Decision:
    """One event against the tag's row (None: never seen, or pruned)."""
    if stored is not None and event.order_key <= stored.order_key:
        return Rejected(_superseded(stored, event), newer=stored)
    live = stored if stored is not None and stored.live else None
    if isinstance(event, TagDeleted) and live is None:
        return Rejected(_not_found(stored, event), _tombstone(stored, event))
    failed = _preconditions(live, event)
    if failed:
        return Rejected(
            Problem(
                ProblemKind.PRECONDITION_FAILED,
                "; ".join(item.message for item in failed),
                failed,
            )
        )
    if isinstance(event, TagDeleted):
        assert live is not None  # a deletion without a live record was answered above
        return Applied(_tombstone(live, event), "deleted", removed=live)
    return _move(stored, event)


def fold(
    stored: TagRecord | None, events: list[TagEvent]
) -> tuple[TagRecord | None, list[Decision]]:
    """Decide each event of one tag in order against the row the previous left."""
    decisions: list[Decision] = []
    current = stored
    for event in events:
        decision = decide(current, event)
        recorded = decision.recorded
        if recorded is not None:
            current = recorded
        decisions.append(decision)
    return current, decisions


def _superseded(stored: TagRecord, event: TagEvent) -> Problem:
    return superseded_problem(event, stored.order_key, live=stored.live)


def superseded_problem(event: TagEvent, newer: OrderKey, *, live: bool) -> Problem:
    """409: ``event`` is not newer than the row's key ``newer`` (a live row's: moved, a
    tombstone's: deleted). Also what rebuilds a stored 409 (worker/outcomes.py)."""
    done = "moved" if live else "deleted"
    on, source, event_id = newer
    newer_time = format_rfc3339(on)  # said twice, formatted once
    return Problem(
        ProblemKind.SUPERSEDED,
        f"{event.ocitag_id} was already {done} by a newer event (time "
        f"{newer_time}, source {source}, id {event_id}); events are ordered by "
        "(time, source, id)",
        (
            ErrorItem(
                event.attribute_location("time"),
                f"must be later than the time of the last applied event ({newer_time})",
                format_rfc3339(event.time),
            ),
        ),
    )


def _not_found(stored: TagRecord | None, event: TagDeleted) -> Problem:
    state = "was never seen" if stored is None or stored.version == 0 else "is already deleted"
    return Problem(
        ProblemKind.NOT_FOUND,
        f"{event.ocitag_id} does not exist: it {state}; the deletion is recorded so that "
        "older moves cannot bring the tag back",
    )


def _preconditions(live: TagRecord | None, event: TagEvent) -> tuple[ErrorItem, ...]:
    """Against the live record: a deleted tag does not exist."""
    items: list[ErrorItem] = []
    if event.previous_artifact is not None:
        current = live.artifact if live else None
        if current != event.previous_artifact:
            items.append(
                ErrorItem(
                    event.data_location("previous_artifact"),
                    f"{event.ocitag_id} points at {current or 'nothing (no live record)'}, "
                    f"not at {event.previous_artifact} (previous_artifact)",
                    event.previous_artifact,
                )
            )
    if event.expected_version is not None:
        version = live.version if live else 0
        if version != event.expected_version:
            items.append(
                ErrorItem(
                    event.data_location("expected_version"),
                    f"{event.ocitag_id} is at version {version}, not at "
                    f"{event.expected_version} (expected_version)",
                    event.expected_version,
                )
            )
    return tuple(items)


def _tombstone(stored: TagRecord | None, event: TagDeleted) -> TagRecord:
    """The row after a deletion: deleted, with the deletion's key; the version counts
    only an applied deletion (of a live record). Artifact and creation are kept."""
    if stored is None:
        return TagRecord(
            repository=event.repository,
            tag=event.tag,
            artifact=None,
            created_by=None,
            created_on=None,
            last_modified_by=event.actor,
            last_modified_on=event.time,
            version=0,
            last_event_source=event.source,
            last_event_id=event.id,
            deleted_on=event.time,
            deleted_by=event.actor,
        )
    return TagRecord(  # not dataclasses.replace: several times the cost, once per event
        stored.repository,
        stored.tag,
        stored.artifact,
        stored.created_by,
        stored.created_on,
        last_modified_by=event.actor,
        last_modified_on=event.time,
        version=stored.version + 1 if stored.live else stored.version,
        last_event_source=event.source,
        last_event_id=event.id,
        deleted_on=event.time,
        deleted_by=event.actor,
    )


def _move(stored: TagRecord | None, event: TagMoved) -> Applied:
    if stored is None or not stored.live:
        # a new record, or one brought back from its tombstone: versions never go back
        record = TagRecord(
            repository=event.repository,
            tag=event.tag,
            artifact=event.artifact,
            created_by=event.actor,
            created_on=event.time,
            last_modified_by=event.actor,
            last_modified_on=event.time,
            version=(stored.version if stored else 0) + 1,
            last_event_source=event.source,
            last_event_id=event.id,
        )
        before = stored.artifact if stored is not None else None
        return Applied(record, "created", replaced=before if before != event.artifact else None)
    change: Change = "unchanged" if stored.artifact == event.artifact else "updated"
    record = TagRecord(  # not dataclasses.replace: several times the cost, once per event
        stored.repository,
        stored.tag,
        event.artifact,
        stored.created_by,
        stored.created_on,
        last_modified_by=event.actor,
        last_modified_on=event.time,
        version=stored.version + 1,
        last_event_source=event.source,
        last_event_id=event.id,
        deleted_on=stored.deleted_on,
        deleted_by=stored.deleted_by,
    )
    return Applied(record, change, replaced=stored.artifact if change == "updated" else None)
