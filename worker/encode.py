"""Tag event → Kafka record: the one builder of input events (the ``publish`` command,
ingest, the api and reconcile all publish through it), beside ``decode``, which reads
them back. Pure: no I/O."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from worker.identifiers import InvalidIdentifierError, normalize_ocitag_id, split_ocitag_id
from worker.models import DELETED_EVENT_TYPE, EVENT_TYPE, STRUCTURED
from worker.timefmt import format_rfc3339

Mode = Literal["structured", "binary"]
DEFAULT_SOURCE = "urn:ocitag-worker:cli"


def build_event(
    ocitag_id: str,
    artifact: str | None,
    *,
    actor: str | None = None,
    previous_artifact: str | None = None,
    expected_version: int | None = None,
    source: str = DEFAULT_SOURCE,
    event_id: str | None = None,
    time: str | None = None,
) -> dict[str, Any]:
    """A tag event as a structured CloudEvent (a dict): ``ocitag.moved.v1`` to
    ``artifact``, or ``ocitag.deleted.v1`` when ``artifact`` is None. The one builder of
    input events: the CLI, ingest, reconcile and the api all publish through it."""
    repository, tag = split_ocitag_id(ocitag_id)
    data: dict[str, Any] = {"repository": repository, "tag": tag}
    if artifact is not None:
        data["artifact"] = artifact
    if actor is not None:
        data["actor"] = actor
    if previous_artifact is not None:
        data["previous_artifact"] = previous_artifact
    if expected_version is not None:
        data["expected_version"] = expected_version
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": EVENT_TYPE if artifact is not None else DELETED_EVENT_TYPE,
        "time": time or format_rfc3339(datetime.now(UTC)),
        "subject": ocitag_id,
        "datacontenttype": "application/json",
        "data": data,
    }


def to_record(
    event: dict[str, Any], mode: Mode
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of one event in the chosen content mode."""
    key = _key(event)
    if mode == "structured":
        value = json.dumps(event, ensure_ascii=False).encode()
        return key, value, [("content-type", STRUCTURED.encode())]
    headers = [
        (f"ce_{name}", str(value).encode())
        for name, value in event.items()
        if name not in ("data", "datacontenttype")
    ]
    headers.append(("content-type", str(event.get("datacontenttype", "application/json")).encode()))
    return key, json.dumps(event.get("data"), ensure_ascii=False).encode(), headers


def _key(event: dict[str, Any]) -> bytes | None:
    data = event.get("data")
    if isinstance(data, dict):
        try:
            return normalize_ocitag_id(f"{data.get('repository')}:{data.get('tag')}").encode()
        except (InvalidIdentifierError, TypeError):
            pass
    subject = event.get("subject")
    return subject.encode() if isinstance(subject, str) else None
