"""Kafka record → tag event (moved or deleted), or the problem saying why not. Pure: no I/O, and no
input, however malformed, raises (the fuzz tests hold it to that).

Content modes (CloudEvents Kafka protocol binding):
- structured: ``content-type: application/cloudevents+json``, the value is the event;
- binary: attributes in ``ce_*`` headers, the value is ``data``.
A record with neither ``ce_specversion`` nor a content type is read as structured.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from worker.events import Decoded, Invalid, RawRecord, TagDeleted, TagMoved, Undecodable
from worker.identifiers import InvalidIdentifierError, normalize_ocitag_id
from worker.models import (
    DELETED_EVENT_TYPE,
    EVENT_TYPE,
    EVENT_TYPES,
    EventAttributes,
    TagDeletedData,
    TagMovedData,
)
from worker.problems import ErrorItem, Problem, ProblemKind
from worker.timefmt import parse_rfc3339

STRUCTURED = "application/cloudevents+json"
CE_PREFIX = "ce_"
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_FINGERPRINTED = ("specversion", "id", "source", "type", "time", "subject")


class _NotDecodableError(Exception):
    def __init__(
        self, problem: Problem, source: str | None = None, event_id: str | None = None
    ) -> None:
        self.problem = problem
        self.source = source
        self.event_id = event_id


def decode(record: RawRecord, max_bytes: int) -> Decoded:
    """The decision for one record. Never raises."""
    try:
        return _decode(record, max_bytes)
    except _NotDecodableError as exc:
        return Undecodable(exc.problem, exc.source, exc.event_id)
    except Exception as exc:
        return Undecodable(
            Problem(ProblemKind.UNDECODABLE, f"record could not be decoded: {type(exc).__name__}")
        )


def _decode(record: RawRecord, max_bytes: int) -> Decoded:
    if record.unreadable is not None:
        raise _NotDecodableError(
            Problem(
                ProblemKind.UNDECODABLE,
                f"the Kafka client could not read this record: {record.unreadable}",
                (ErrorItem("record", "must be a readable Kafka record", None),),
            )
        )
    value = record.value or b""
    if len(value) > max_bytes:
        raise _NotDecodableError(
            Problem(
                ProblemKind.TOO_LARGE,
                f"record value is {len(value)} bytes; the limit is {max_bytes} "
                "(OCITAG_MAX_EVENT_BYTES)",
                (ErrorItem("body", f"must be at most {max_bytes} bytes", len(value)),),
            )
        )
    headers = _header_map(record.headers)
    # the Kafka protocol binding: the content type decides; ce_ headers mean binary mode
    content_type = headers.get("content-type")
    structured = content_type is not None and _media_type(content_type) == STRUCTURED
    if not structured and f"{CE_PREFIX}specversion" in headers:
        attributes, data, prefix = _binary(headers, value)
        data_prefix = "body"
    else:
        content_type = content_type or STRUCTURED
        if _media_type(content_type) != STRUCTURED:
            raise _NotDecodableError(
                Problem(
                    ProblemKind.UNDECODABLE,
                    "a record must be a CloudEvent: structured (content-type "
                    f"{STRUCTURED}) or binary (ce_* headers)",
                    (ErrorItem("headers.content-type", f"must be {STRUCTURED}", content_type),),
                )
            )
        event = _json_value(value, "body")
        if not isinstance(event, dict):
            raise _NotDecodableError(
                Problem(
                    ProblemKind.UNDECODABLE,
                    "a structured CloudEvent must be a JSON object",
                    (ErrorItem("body", "must be a JSON object", event),),
                )
            )
        data = event.pop("data", _MISSING)
        attributes, prefix, data_prefix = event, "body.", "body.data"
    envelope = _envelope(attributes, prefix)
    return _event(envelope, attributes, data, data_prefix)


_MISSING: Any = object()


def _header_map(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, raw in headers:
        name = key.lower()
        try:
            out[name] = (raw or b"").decode("utf-8")
        except UnicodeDecodeError:
            if name.startswith(CE_PREFIX) or name == "content-type":
                raise _NotDecodableError(
                    Problem(
                        ProblemKind.UNDECODABLE,
                        f"header {name} is not valid UTF-8",
                        (ErrorItem(f"headers.{name}", "must be valid UTF-8", raw),),
                    )
                ) from None
    return out


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_value(value: bytes, location: str) -> Any:
    try:
        # fast path: orjson checks UTF-8, refuses NaN and lone surrogates, limits depth
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        pass  # the standard parser below says exactly why (or takes huge integers)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _NotDecodableError(
            Problem(
                ProblemKind.UNDECODABLE,
                f"{location} is not valid UTF-8 (byte {exc.start})",
                (ErrorItem(location, "must be UTF-8 encoded JSON", value[:64]),),
            )
        ) from None
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
        if _SURROGATE_ESCAPE_RE.search(text):
            # valid pairs are fine; a lone \ud800 escape is not Unicode text
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        return parsed
    except UnicodeEncodeError:
        raise _NotDecodableError(
            Problem(
                ProblemKind.UNDECODABLE,
                f"{location} has a lone surrogate escape (\\ud800-\\udfff): not Unicode text",
                (ErrorItem(location, "must not contain lone surrogate escapes", text[:64]),),
            )
        ) from None
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise _NotDecodableError(
            Problem(
                ProblemKind.UNDECODABLE,
                f"{location} is not valid JSON: {reason}",
                (ErrorItem(location, f"must be valid JSON ({reason})", text[:64]),),
            )
        ) from None


def _binary(headers: Mapping[str, str], value: bytes) -> tuple[dict[str, Any], Any, str]:
    attributes: dict[str, Any] = {
        name.removeprefix(CE_PREFIX): text
        for name, text in headers.items()
        if name.startswith(CE_PREFIX)
    }
    if "content-type" in headers:
        attributes["datacontenttype"] = headers["content-type"]
    data = _json_value(value, "body") if value else _MISSING
    return attributes, data, "headers.ce_"


def _location(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = ".".join(str(part) for part in loc)
    if prefix == "headers.ce_" and path == "datacontenttype":
        return "headers.content-type"
    if prefix.endswith((".", "_")):
        return prefix + path
    return f"{prefix}.{path}" if path else prefix


_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "literal_error": None,
}


def _items(
    exc: ValidationError, prefix: str, raw: Mapping[str, Any], what: str = "the envelope"
) -> list[ErrorItem]:
    items = []
    for err in exc.errors():
        items.append(_item(err, prefix, raw, what))
    return items


def _item(err: ErrorDetails, prefix: str, raw: Mapping[str, Any], what: str) -> ErrorItem:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        message = f"is not a member of {what} (unknown members are rejected)"
    else:
        message = _MESSAGES.get(err["type"]) or str(err["msg"]).removeprefix("Value error, ")
    value = raw.get(str(loc[0])) if loc and err["type"] != "missing" else None
    return ErrorItem(_location(prefix, loc), message, value)


def _envelope(attributes: dict[str, Any], prefix: str) -> EventAttributes:
    try:
        envelope = EventAttributes.model_validate(attributes)
    except ValidationError as exc:
        items = _items(exc, prefix, attributes)
        broken = {item.location for item in items}
        source, event_id = attributes.get("source"), attributes.get("id")
        known = (
            isinstance(source, str)
            and isinstance(event_id, str)
            and not broken & {_location(prefix, ("source",)), _location(prefix, ("id",))}
        )
        raise _NotDecodableError(
            Problem(
                ProblemKind.INVALID_ENVELOPE,
                "the CloudEvents envelope breaks "
                + ("a rule" if len(items) == 1 else f"{len(items)} rules")
                + ": "
                + "; ".join(f"{i.location} {i.message}" for i in items),
                tuple(items),
            ),
            source if known else None,
            event_id if known else None,
        ) from None
    if envelope.type not in EVENT_TYPES:
        expected = f"'{EVENT_TYPE}' or '{DELETED_EVENT_TYPE}'"
        raise _NotDecodableError(
            Problem(
                ProblemKind.UNKNOWN_TYPE,
                f"event type '{envelope.type[:100]}' is not handled; this worker takes {expected}",
                (ErrorItem(_location(prefix, ("type",)), f"must be {expected}", envelope.type),),
            ),
            envelope.source,
            envelope.id,
        )
    return envelope


def fingerprint(envelope: EventAttributes, data: Any) -> bytes:
    """SHA-256 of the event's content (attributes and data as sent, extensions aside):
    equal for the same event in either content mode; differs when an id is reused."""
    content = {name: getattr(envelope, name) for name in _FINGERPRINTED}
    content["data"] = None if data is _MISSING else data
    try:
        canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits: only the standard encoder takes them
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).digest()


def _event(
    envelope: EventAttributes, attributes: Mapping[str, Any], data: Any, prefix: str
) -> Decoded:
    print_ = fingerprint(envelope, data)
    deleted = envelope.type == DELETED_EVENT_TYPE
    what = "tag-deleted data" if deleted else "tag-moved data"
    model: type[TagMovedData | TagDeletedData] = TagDeletedData if deleted else TagMovedData
    items: list[ErrorItem] = []
    parsed: TagMovedData | TagDeletedData | None = None
    if data is _MISSING:
        items.append(ErrorItem(prefix, f"is required: the {what} object", None))
    elif not isinstance(data, dict):
        items.append(ErrorItem(prefix, "must be a JSON object", data))
    else:
        try:
            parsed = model.model_validate(data)
        except ValidationError as exc:
            items.extend(_items(exc, prefix, data, what))
    canonical_id = parsed.ocitag_id if parsed else _partial_id(data)
    subject_item = _subject_item(envelope.subject, canonical_id, attributes, prefix)
    if subject_item:
        items.append(subject_item)
    binary = prefix == "body"
    if items or parsed is None:
        return Invalid(
            source=envelope.source,
            id=envelope.id,
            fingerprint=print_,
            subject=canonical_id,
            binary=binary,
            problem=Problem(
                ProblemKind.INVALID_DATA,
                f"the {what} breaks {len(items)} rule{'s' if len(items) > 1 else ''}: "
                + "; ".join(f"{i.location} {i.message}" for i in items),
                tuple(items),
            ),
        )
    actor = parsed.actor if parsed.actor is not None else envelope.source
    if isinstance(parsed, TagDeletedData):
        return TagDeleted(
            source=envelope.source,
            id=envelope.id,
            fingerprint=print_,
            time=parse_rfc3339(envelope.time),
            repository=parsed.repository,
            tag=parsed.tag,
            actor=actor,
            previous_artifact=parsed.previous_artifact,
            expected_version=parsed.expected_version,
            binary=binary,
        )
    return TagMoved(
        source=envelope.source,
        id=envelope.id,
        fingerprint=print_,
        time=parse_rfc3339(envelope.time),
        repository=parsed.repository,
        tag=parsed.tag,
        artifact=parsed.artifact,
        actor=actor,
        previous_artifact=parsed.previous_artifact,
        expected_version=parsed.expected_version,
        binary=binary,
    )


def _partial_id(data: Any) -> str | None:
    """The canonical OCITag ID when repository and tag are valid though other members are
    not, so the rejection is keyed and filed under its tag."""
    if not isinstance(data, dict):
        return None
    repository, tag = data.get("repository"), data.get("tag")
    if not isinstance(repository, str) or not isinstance(tag, str):
        return None
    try:
        return normalize_ocitag_id(f"{repository}:{tag}")
    except InvalidIdentifierError:
        return None


def _subject_item(
    subject: str | None, canonical_id: str | None, attributes: Mapping[str, Any], prefix: str
) -> ErrorItem | None:
    if subject is None or canonical_id is None:
        return None
    location = "headers.ce_subject" if prefix == "body" else "body.subject"
    try:
        normalized = normalize_ocitag_id(subject)
    except InvalidIdentifierError as exc:
        return ErrorItem(location, f"must be an OCITag ID: {exc}", attributes.get("subject"))
    if normalized != canonical_id:
        return ErrorItem(
            location,
            f"must name the tag in data ({canonical_id}), but names {normalized}",
            subject,
        )
    return None
