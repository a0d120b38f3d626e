"""The apply / supersede / precondition decision of the contract (docs/contract.md
"Semantics"). Pure.

``decide(stored, event)`` is the whole rule for one event against the tag's current
record; ``fold`` runs it over the events of one tag in delivery order. The store runs the
fold inside a transaction and lets PostgreSQL settle races on the written rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from worker.events import OrderKey, TagMoved
from worker.problems import ErrorItem, Problem, ProblemKind
from worker.timefmt import format_rfc3339

Change = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True, slots=True)
class TagRecord:
    """A row of ``ocitags``: the seed's OCITag plus version and the last applied key."""

    repository: str
    tag: str
    artifact: str
    created_by: str
    created_on: datetime
    last_modified_by: str
    last_modified_on: datetime
    version: int
    last_event_source: str
    last_event_id: str

    @property
    def order_key(self) -> OrderKey:
        return (self.last_modified_on, self.last_event_source, self.last_event_id)

    def as_ocitag(self) -> dict[str, str]:
        """The seed's OCITag, members in the schema's order."""
        return {
            "artifact": self.artifact,
            "repository": self.repository,
            "tag": self.tag,
            "created_by": self.created_by,
            "created_on": format_rfc3339(self.created_on),
            "last_modified_by": self.last_modified_by,
            "last_modified_on": format_rfc3339(self.last_modified_on),
        }


@dataclass(frozen=True, slots=True)
class Applied:
    record: TagRecord
    change: Change


@dataclass(frozen=True, slots=True)
class Rejected:
    problem: Problem


Decision = Applied | Rejected


def decide(stored: TagRecord | None, event: TagMoved) -> Decision:
    """Supersede (409) unless the event's key is greater than the last applied one;
    then the preconditions (412); then apply."""
    if stored is not None and event.order_key <= stored.order_key:
        return Rejected(_superseded(stored, event))
    failed = _preconditions(stored, event)
    if failed:
        return Rejected(
            Problem(
                ProblemKind.PRECONDITION_FAILED,
                "; ".join(item.message for item in failed),
                failed,
            )
        )
    return _apply(stored, event)


def fold(
    stored: TagRecord | None, events: list[TagMoved]
) -> tuple[TagRecord | None, list[Decision]]:
    """Decide each event of one tag in order against the record the previous left."""
    decisions: list[Decision] = []
    current = stored
    for event in events:
        decision = decide(current, event)
        if isinstance(decision, Applied):
            current = decision.record
        decisions.append(decision)
    return current, decisions


def _superseded(stored: TagRecord, event: TagMoved) -> Problem:
    return Problem(
        ProblemKind.SUPERSEDED,
        f"{event.ocitag_id} was already moved by a newer event (time "
        f"{format_rfc3339(stored.last_modified_on)}, source {stored.last_event_source}, "
        f"id {stored.last_event_id}); events are ordered by (time, source, id)",
        (
            ErrorItem(
                event.attribute_location("time"),
                "must be later than the time of the last applied event "
                f"({format_rfc3339(stored.last_modified_on)})",
                format_rfc3339(event.time),
            ),
        ),
    )


def _preconditions(stored: TagRecord | None, event: TagMoved) -> tuple[ErrorItem, ...]:
    items: list[ErrorItem] = []
    if event.previous_artifact is not None:
        current = stored.artifact if stored else None
        if current != event.previous_artifact:
            items.append(
                ErrorItem(
                    event.data_location("previous_artifact"),
                    f"{event.ocitag_id} points at {current or 'nothing (no record)'}, not at "
                    "previous_artifact",
                    event.previous_artifact,
                )
            )
    if event.expected_version is not None:
        version = stored.version if stored else 0
        if version != event.expected_version:
            items.append(
                ErrorItem(
                    event.data_location("expected_version"),
                    f"{event.ocitag_id} is at version {version}, not at expected_version",
                    event.expected_version,
                )
            )
    return tuple(items)


def _apply(stored: TagRecord | None, event: TagMoved) -> Applied:
    if stored is None:
        record = TagRecord(
            repository=event.repository,
            tag=event.tag,
            artifact=event.artifact,
            created_by=event.actor,
            created_on=event.time,
            last_modified_by=event.actor,
            last_modified_on=event.time,
            version=1,
            last_event_source=event.source,
            last_event_id=event.id,
        )
        return Applied(record, "created")
    change: Change = "unchanged" if stored.artifact == event.artifact else "updated"
    record = replace(
        stored,
        artifact=event.artifact,
        last_modified_by=event.actor,
        last_modified_on=event.time,
        version=stored.version + 1,
        last_event_source=event.source,
        last_event_id=event.id,
    )
    return Applied(record, change)
