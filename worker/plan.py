"""Pure steps of applying a batch: who is a duplicate of whom, what a replay or an id
reuse answers, and the outcome of each decision. The store does the I/O around them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from worker.decision import Applied, Decision, Rejected, TagRecord, fold
from worker.events import Invalid, RawRecord, TagDeleted, TagMoved
from worker.outcomes import Outcome, OutcomeContext, outcome_id, rejection, success
from worker.problems import ErrorItem, Problem, ProblemKind
from worker.timefmt import format_rfc3339

EventKey = tuple[str, str]  # (source, id)
TagKey = tuple[str, str]  # (repository, tag)
Accepted = TagMoved | TagDeleted | Invalid


@dataclass(frozen=True, slots=True)
class Item:
    """One record of a batch that has an identity (it is stored as processed)."""

    record: RawRecord
    event: Accepted

    @property
    def key(self) -> EventKey:
        return (self.event.source, self.event.id)


@dataclass(frozen=True, slots=True)
class ProcessedRow:
    """What ``processed_events`` holds for an event processed earlier."""

    fingerprint: bytes
    processed_at: datetime
    status: int
    outcome_key: bytes | None
    outcome: bytes


def first_occurrences(items: Sequence[Item]) -> dict[EventKey, int]:
    """The index of the first item of each (source, id); later ones are duplicates."""
    firsts: dict[EventKey, int] = {}
    for index, item in enumerate(items):
        firsts.setdefault(item.key, index)
    return firsts


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


def decision_outcome(
    ctx: OutcomeContext, item: Item, decision: Decision, processed_at: datetime
) -> Outcome:
    event = item.event
    assert not isinstance(event, Invalid)
    if isinstance(decision, Applied):
        return success(
            ctx,
            source=event.source,
            event_id=event.id,
            fingerprint=event.fingerprint,
            processed_at=processed_at,
            applied=decision,
        )
    return _rejected(ctx, item, decision, processed_at)


def _rejected(ctx: OutcomeContext, item: Item, decision: Rejected, at: datetime) -> Outcome:
    event = item.event
    subject = event.subject if isinstance(event, Invalid) else event.ocitag_id
    return rejection(
        ctx,
        problem=decision.problem,
        instance=item.record.instance,
        subject=subject,
        outcome_uuid=outcome_id(event.source, event.id, event.fingerprint),
        processed_at=at,
        source=event.source,
        event_id=event.id,
    )


def invalid_outcome(ctx: OutcomeContext, item: Item, processed_at: datetime) -> Outcome:
    assert isinstance(item.event, Invalid)
    return _rejected(ctx, item, Rejected(item.event.problem), processed_at)


def internal_outcome(
    ctx: OutcomeContext, item: Item, reason: str, processed_at: datetime
) -> Outcome:
    """A permanent failure of this one event (the database refused it)."""
    problem = Problem(ProblemKind.INTERNAL, f"the event could not be stored: {reason}")
    return _rejected(ctx, item, Rejected(problem), processed_at)


def repeat_outcome(
    ctx: OutcomeContext,
    item: Item,
    first_fingerprint: bytes,
    first_processed_at: datetime,
    first_outcome: Outcome,
) -> Outcome:
    """A duplicate gets the first outcome itself; an id reused with other content gets
    409, timed at the first processing so that its own replays are identical too."""
    if item.event.fingerprint == first_fingerprint:
        return Outcome(first_outcome.key, first_outcome.value, first_outcome.status, None, True)
    source, event_id = item.key
    problem = Problem(
        ProblemKind.ID_REUSED,
        f"event (source {source}, id {event_id}) was first processed at "
        f"{format_rfc3339(first_processed_at)} with different content; a new event needs a "
        "new id",
        (
            ErrorItem(
                item.event.attribute_location("id"),
                "must be unique per source for different content",
                event_id,
            ),
        ),
    )
    return _rejected(ctx, item, Rejected(problem), first_processed_at)


def replayed(row: ProcessedRow) -> Outcome:
    return Outcome(row.outcome_key, row.outcome, row.status, None, True)
