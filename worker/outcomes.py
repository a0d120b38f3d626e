"""Outcome CloudEvents: one per input, built as bytes once. Pure.

A processed event's outcome is stored and republished byte-identical, so nothing here
may depend on when or where it is rebuilt except what is passed in.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.decision import Applied, Change, TagRecord
from worker.events import RawRecord, Undecodable
from worker.models import REJECTED_TYPE, REMOVED_TYPE, UPDATED_TYPE
from worker.problems import Problem, error_model
from worker.timefmt import format_rfc3339

CONTENT_TYPE = b"application/cloudevents+json"
_HEADERS = [("content-type", CONTENT_TYPE)]  # shared, never modified
_NAMESPACE = uuid.UUID("6f0d3c1e-2b7a-5e44-9c1d-0a7c3f9e8b21")


@dataclass(frozen=True, slots=True)
class Outcome:
    """An outcome ready to produce: key, value and its status for metrics and logs."""

    key: bytes | None
    value: bytes
    status: int
    change: Change | None = None
    #: republished from the processed-event record (a duplicate delivery)
    replay: bool = False

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return _HEADERS


@dataclass(frozen=True, slots=True)
class OutcomeContext:
    """What every outcome of this worker shares (from settings)."""

    worker_source: str
    problem_base_uri: str


def outcome_id(source: str, event_id: str, fingerprint: bytes) -> str:
    """Deterministic: a republished outcome has the same id; a reused input id with other
    content gets another (its outcome is another event)."""
    return _uuid5(f"{source}\n{event_id}\n{fingerprint.hex()}")


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(_NAMESPACE, name))`` without building UUID objects (a test
    holds the two equal): this runs once per event."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE.bytes + name.encode(), usedforsecurity=False).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def record_outcome_id(record: RawRecord) -> str:
    """For records with no usable (source, id): the record's coordinates and bytes."""
    digest = hashlib.sha256(record.value or b"").hexdigest()
    return _uuid5(f"{record.instance}\n{digest}")


def _encode(envelope: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(envelope)
    except TypeError:  # an offending value with an integer beyond 64 bits
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def success(
    ctx: OutcomeContext,
    *,
    source: str,
    event_id: str,
    fingerprint: bytes,
    processed_at: datetime,
    applied: Applied,
) -> Outcome:
    """200: ``ocitag.updated.v1`` with the record as applied, or, for an applied
    deletion, ``ocitag.removed.v1`` with the record as it was just before."""
    record: TagRecord = applied.record
    subject = f"{record.repository}:{record.tag}"
    shown = applied.removed if applied.removed is not None else record
    envelope = {
        "specversion": "1.0",
        "id": outcome_id(source, event_id, fingerprint),
        "source": ctx.worker_source,
        "type": REMOVED_TYPE if applied.removed is not None else UPDATED_TYPE,
        "time": format_rfc3339(processed_at),
        "subject": subject,
        "datacontenttype": "application/json",
        "status": 200,
        "causationid": event_id,
        "causationsource": source,
        "resourceversion": record.version,
        "change": applied.change,
        "data": shown.as_ocitag(),
    }
    return Outcome(subject.encode(), _encode(envelope), 200, applied.change)


def rejection(
    ctx: OutcomeContext,
    *,
    problem: Problem,
    instance: str,
    subject: str | None,
    outcome_uuid: str,
    processed_at: datetime,
    source: str | None,
    event_id: str | None,
) -> Outcome:
    envelope = {
        "specversion": "1.0",
        "id": outcome_uuid,
        "source": ctx.worker_source,
        "type": REJECTED_TYPE,
        "time": format_rfc3339(processed_at),
        "subject": subject,
        "datacontenttype": "application/problem+json",
        "status": problem.status,
        "causationid": event_id,
        "causationsource": source,
        "data": error_model(problem, ctx.problem_base_uri, instance),
    }
    return Outcome(subject.encode() if subject else None, _encode(envelope), problem.status)


def record_time(raw: RawRecord) -> datetime:
    """The record's Kafka timestamp: the time of outcomes that are not stored (400,
    500), so that a redelivery gets the same bytes. The epoch if it has none."""
    try:
        return datetime.fromtimestamp(raw.timestamp_ms / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, UTC)


def undecodable_outcome_id(raw: RawRecord, event: Undecodable) -> str:
    """From the input's (source, id) and bytes when it got that far, else from the
    record's coordinates and bytes."""
    if event.source is not None and event.id is not None:
        return outcome_id(event.source, event.id, hashlib.sha256(raw.value or b"").digest())
    return record_outcome_id(raw)


def undecodable_outcome(ctx: OutcomeContext, raw: RawRecord, event: Undecodable) -> Outcome:
    """The 400 for a record that is not a decodable CloudEvent (never stored)."""
    return rejection(
        ctx,
        problem=event.problem,
        instance=raw.instance,
        subject=None,
        outcome_uuid=undecodable_outcome_id(raw, event),
        processed_at=record_time(raw),
        source=event.source,
        event_id=event.id,
    )
