"""The outcome builder as it was before it was made lean (issue "Close to the floor"),
kept ONLY as the oracle of tests/unit/test_outcome_bytes.py: every outcome the worker
builds must stay byte for byte what this builds. Written as plainly as it was: each
attribute in one dict, ``None`` filtered out, the OCITag and the state value each built
from the record, a 409's texts formatted where they are said, ``uuid.uuid5`` itself,
``dataclasses.replace`` for a row's next state, the problem document built member by
member (``error_model``, with ``shorten`` as it was). It shares with the worker only what
the changes did not touch (the time format, the catalogue).

Each builder returns a ``Built``: what an ``Outcome`` carries, its state record as bytes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from worker import problems
from worker.decision import Applied, Decision, Rejected, TagRecord
from worker.events import Invalid, RawRecord, TagDeleted, TagEvent, TagMoved, Undecodable
from worker.outcomes import OutcomeContext
from worker.plan import Item, ProcessedRow
from worker.problems import MAX_VALUE_CHARS, ErrorItem, Problem, ProblemKind
from worker.timefmt import format_rfc3339

_NAMESPACE = uuid.UUID("6f0d3c1e-2b7a-5e44-9c1d-0a7c3f9e8b21")


@dataclass(frozen=True)
class Built:
    key: bytes | None
    value: bytes
    status: int
    change: str | None = None
    #: the state record's (key, value, version); None: no state record
    state: tuple[bytes, bytes | None, int | None] | None = None
    repointed: bool = False


def ocitag(record: TagRecord) -> dict[str, str]:
    assert record.artifact and record.created_by and record.created_on
    return {
        "artifact": record.artifact,
        "repository": record.repository,
        "tag": record.tag,
        "created_by": record.created_by,
        "created_on": format_rfc3339(record.created_on),
        "last_modified_by": record.last_modified_by,
        "last_modified_on": format_rfc3339(record.last_modified_on),
    }


def next_row(stored: TagRecord | None, event: TagEvent) -> TagRecord:
    """The row an applied decision leaves, as ``dataclasses.replace`` wrote it."""
    assert stored is not None
    common: dict[str, Any] = {
        "last_modified_by": event.actor,
        "last_modified_on": event.time,
        "last_event_source": event.source,
        "last_event_id": event.id,
    }
    if isinstance(event, TagDeleted):
        version = stored.version + 1 if stored.live else stored.version
        return replace(
            stored, version=version, deleted_on=event.time, deleted_by=event.actor, **common
        )
    return replace(stored, artifact=event.artifact, version=stored.version + 1, **common)


def superseded(event: TagEvent, newer: TagRecord) -> Problem:
    done = "moved" if newer.live else "deleted"
    on, source, event_id = newer.order_key
    return Problem(
        ProblemKind.SUPERSEDED,
        f"{event.ocitag_id} was already {done} by a newer event (time "
        f"{format_rfc3339(on)}, source {source}, id {event_id}); events are ordered by "
        "(time, source, id)",
        (
            ErrorItem(
                event.attribute_location("time"),
                f"must be later than the time of the last applied event ({format_rfc3339(on)})",
                format_rfc3339(event.time),
            ),
        ),
    )


def _id(source: str | None, event_id: str | None, fingerprint: bytes) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{source}\n{event_id}\n{fingerprint.hex()}"))


def _record_id(raw: RawRecord, kind: ProblemKind) -> str:
    """An outcome that is not stored: from the record's coordinates, bytes and type."""
    digest = hashlib.sha256(raw.value or b"").hexdigest()
    return str(uuid.uuid5(_NAMESPACE, f"{raw.instance}\n{digest}\n{kind.slug}"))


def _envelope(
    source: str,
    outcome_uuid: str,
    type_: str,
    at: datetime,
    subject: str | None,
    datacontenttype: str,
    status: int,
    causation: tuple[str | None, str | None],
    extensions: dict[str, Any],
    data: dict[str, Any],
) -> bytes:
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": outcome_uuid,
        "source": source,
        "type": type_,
        "time": format_rfc3339(at),
        "subject": subject,
        "datacontenttype": datacontenttype,
        "status": status,
        "causationid": causation[1],
        "causationsource": causation[0],
        **extensions,
    }
    envelope = {name: value for name, value in attributes.items() if value is not None}
    envelope["data"] = data
    try:
        return orjson.dumps(envelope)
    except TypeError:
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def success(
    ctx: OutcomeContext, event: TagEvent, applied: Applied, at: datetime, source: str = ""
) -> Built:
    record = applied.record
    flagged = applied.replaced is not None and record.tag in ctx.immutable_tags
    extensions: dict[str, Any] = {"resourceversion": record.version, "change": applied.change}
    if flagged:
        extensions["repointed"] = True
    shown = applied.removed if applied.removed is not None else record
    subject = f"{record.repository}:{record.tag}"
    value = _envelope(
        source or ctx.worker_source,
        _id(event.source, event.id, event.fingerprint),
        "ocitag.removed.v1" if applied.change == "deleted" else "ocitag.updated.v1",
        at,
        subject,
        "application/json",
        200,
        (event.source, event.id),
        extensions,
        ocitag(shown),
    )
    state = (
        (subject.encode(), None, record.version)
        if applied.change == "deleted"
        else (subject.encode(), orjson.dumps({**ocitag(record), "version": record.version}),
              record.version)
    )  # fmt: skip
    return Built(subject.encode(), value, 200, applied.change, state, flagged)


def problem_outcome(
    source: str,
    base: str,
    problem: Problem,
    *,
    instance: str,
    subject: str | None,
    outcome_uuid: str,
    at: datetime,
    causation: tuple[str | None, str | None],
) -> Built:
    value = _envelope(
        source,
        outcome_uuid,
        "ocitag.rejected.v1",
        at,
        subject,
        "application/problem+json",
        problem.status,
        causation,
        {},
        error_model(problem, base, instance),
    )
    return Built(subject.encode() if subject else None, value, problem.status)


def shorten(value: Any) -> Any:
    """The offending text as the worker cut it before its ASCII fast path (any other
    value goes the worker's way: the fast path takes only text)."""
    if isinstance(value, str):
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "…"
    return problems.shorten(value)


def error_model(problem: Problem, base_uri: str, instance: str) -> dict[str, Any]:
    """The seed's ErrorModel as the worker built it member by member."""
    model: dict[str, Any] = {
        "type": base_uri + problem.kind.slug,
        "title": problem.kind.title,
        "status": problem.kind.status,
    }
    if problem.kind.terse:
        return model
    model["detail"] = problem.detail
    model["instance"] = instance
    model["errors"] = [
        {"location": item.location, "message": item.message, "value": shorten(item.value)}
        for item in problem.errors
    ]
    return model


def rejected(
    ctx: OutcomeContext, item: Item, problem: Problem, at: datetime, *, stored: bool = True
) -> Built:
    event = item.event
    return problem_outcome(
        ctx.worker_source,
        ctx.problem_base_uri,
        problem,
        instance=item.record.instance,
        subject=event.subject if isinstance(event, Invalid) else event.ocitag_id,
        outcome_uuid=(
            _id(event.source, event.id, event.fingerprint)
            if stored
            else _record_id(item.record, problem.kind)
        ),
        at=at,
        causation=(event.source, event.id),
    )


def decided(ctx: OutcomeContext, item: Item, decision: Decision | None, at: datetime) -> Built:
    """A new item's outcome (``decision`` None: a 422)."""
    event = item.event
    if isinstance(event, Invalid):
        return rejected(ctx, item, event.problem, at)
    if isinstance(decision, Applied):
        return success(ctx, event, decision, at)
    assert isinstance(decision, Rejected)
    return rejected(ctx, item, decision.problem, at)


def id_reused(ctx: OutcomeContext, item: Item, first_at: datetime) -> Built:
    source, event_id = item.key
    problem = Problem(
        ProblemKind.ID_REUSED,
        f"event (source {source}, id {event_id}) was first processed at "
        f"{format_rfc3339(first_at)} with different content; a new event needs a new id",
        (
            ErrorItem(
                item.event.attribute_location("id"),
                "must be unique per source for different content",
                event_id,
            ),
        ),
    )
    return rejected(ctx, item, problem, first_at, stored=False)


def record_time(raw: RawRecord) -> datetime:
    try:
        return datetime.fromtimestamp(raw.timestamp_ms / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, UTC)


def internal(ctx: OutcomeContext, item: Item, reason: str) -> Built:
    problem = Problem(ProblemKind.INTERNAL, f"the event could not be stored: {reason}")
    return rejected(ctx, item, problem, record_time(item.record), stored=False)


def undecodable(ctx: OutcomeContext, raw: RawRecord, event: Undecodable) -> Built:
    return problem_outcome(
        ctx.worker_source,
        ctx.problem_base_uri,
        event.problem,
        instance=raw.instance,
        subject=event.subject,
        outcome_uuid=_record_id(raw, event.problem.kind),
        at=record_time(raw),
        causation=(event.source, event.id),
    )


def rebuilt(ctx: OutcomeContext, item: Item, row: ProcessedRow) -> Built:
    """A compact record's first outcome, rebuilt with the repeat ``item``."""
    event = item.event
    assert isinstance(event, TagMoved | TagDeleted)
    if row.superseded is not None:
        kept = row.superseded
        first = replace(event, binary=kept.binary)
        newer = TagRecord(
            first.repository, first.tag, "x", "x", kept.on, "x", kept.on, 1, kept.source, kept.id,
            deleted_on=None if kept.live else kept.on,
        )  # fmt: skip
        return problem_outcome(
            row.worker_source or ctx.worker_source,
            row.problem_base or ctx.problem_base_uri,
            superseded(first, newer),
            instance=kept.instance,
            subject=first.ocitag_id,
            outcome_uuid=_id(first.source, first.id, first.fingerprint),
            at=row.processed_at,
            causation=(first.source, first.id),
        )
    assert isinstance(event, TagMoved) and row.change is not None and row.version is not None
    record = TagRecord(
        repository=event.repository,
        tag=event.tag,
        artifact=event.artifact,
        created_by=row.created_by if row.created_by is not None else event.actor,
        created_on=row.created_on if row.created_on is not None else event.time,
        last_modified_by=event.actor,
        last_modified_on=event.time,
        version=row.version,
        last_event_source=event.source,
        last_event_id=event.id,
    )
    return success(
        ctx, event, Applied(record, row.change), row.processed_at, row.worker_source or ""
    )
