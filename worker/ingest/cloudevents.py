"""Tag events themselves over HTTP: ``ocitag.moved.v1`` and ``ocitag.deleted.v1`` in any
CloudEvents HTTP content mode (binary, structured, batched).

The sender's ``source``, ``id`` and ``time`` are kept, so an event published here and
the same event published straight to Kafka are one event to the worker. ``data`` is
checked here by the contract's rules (docs/contract.md "Input: tag events"), so a bad event is
answered 400 at once instead of becoming a rejection outcome later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.identifiers import InvalidIdentifierError, normalize_ocitag_id
from worker.ingest.cehttp import Received, read_events
from worker.ingest.mapping import Mapped, MappingError, TagChange
from worker.ingest.payload import as_object, optional_str, required_str

MOVED = "ocitag.moved.v1"
DELETED = "ocitag.deleted.v1"
_MEMBERS = {
    MOVED: frozenset(
        {"repository", "tag", "artifact", "actor", "previous_artifact", "expected_version"}
    ),
    DELETED: frozenset({"repository", "tag", "actor", "previous_artifact", "expected_version"}),
}


def map_delivery(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    return [_map(event) for event in read_events(body, headers)]


def _map(event: Received) -> Mapped:
    kind = event.required("type")
    if kind not in _MEMBERS:
        raise MappingError(event.where("type"), f"must be {MOVED} or {DELETED}", kind)
    content_type = event.optional("datacontenttype")
    if content_type is not None and content_type.split(";")[0].strip() != "application/json":
        raise MappingError(event.where("datacontenttype"), "must be application/json", content_type)
    where = "body" if event.location.startswith("headers") else event.where("data")
    data = as_object(event.data, where)
    unknown = sorted(set(data) - _MEMBERS[kind])
    if unknown:
        raise MappingError(f"{where}.{unknown[0]}", f"is not a member of {kind} data")
    repository = required_str(data, "repository", where)
    tag = required_str(data, "tag", where)
    _check_subject(event, f"{repository}:{tag}")
    return TagChange(
        action="moved" if kind == MOVED else "deleted",
        repository=repository,
        tag=tag,
        digest=required_str(data, "artifact", where) if kind == MOVED else None,
        event_id=event.required("id"),
        time=event.time(),
        source=event.required("source"),
        actor=optional_str(data, "actor", where),
        previous_artifact=optional_str(data, "previous_artifact", where),
        expected_version=_version(data, where),
    )


def _version(data: Mapping[str, Any], where: str) -> int | None:
    value = data.get("expected_version")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MappingError(f"{where}.expected_version", "must be a whole number >= 0", value)
    return value


def _check_subject(event: Received, ocitag_id: str) -> None:
    subject = event.optional("subject")
    if subject is None:
        return
    try:
        expected = normalize_ocitag_id(ocitag_id)
    except InvalidIdentifierError:
        return  # the broken repository or tag is reported where it is
    try:
        same = normalize_ocitag_id(subject) == expected
    except InvalidIdentifierError as exc:
        raise MappingError(event.where("subject"), str(exc), subject) from None
    if not same:
        raise MappingError(
            event.where("subject"), f"must name the tag in data ({ocitag_id})", subject
        )
