"""Kafka record → tag event (moved or deleted), or the problem saying why not. Pure: no I/O, and no
input, however malformed, raises (the fuzz tests hold it to that).

Content modes (CloudEvents Kafka protocol binding):
- structured: ``content-type: application/cloudevents+json``, the value is the event;
- binary: attributes in ``ce_*`` headers, the value is ``data``.
A record with neither ``ce_specversion`` nor a content type is read as structured.

Content is compared by meaning, not spelling (``fingerprint``): the same event re-sent by
another client, or in the other content mode, is a duplicate, not an id reuse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from worker.events import Decoded, Invalid, RawRecord, TagDeleted, TagMoved, Undecodable
from worker.fastdecode import content_digest, valid_event
from worker.identifiers import InvalidIdentifierError, normalize_ocitag_id
from worker.models import (
    DELETED_EVENT_TYPE,
    EVENT_TYPE,
    EVENT_TYPES,
    PARSED_TIME,
    STRUCTURED,
    EventAttributes,
    TagDeletedData,
    TagMovedData,
    rule_message,
)
from worker.problems import ErrorItem, Problem, ProblemKind, breaks_rules

CE_PREFIX = "ce_"
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class _NotDecodableError(Exception):
    def __init__(
        self, problem: Problem, source: str | None = None, event_id: str | None = None
    ) -> None:
        self.problem = problem
        self.source = source
        self.event_id = event_id
        self.subject: str | None = None


def decode(record: RawRecord, max_bytes: int) -> Decoded:
    """The decision for one record. Never raises."""
    try:
        return _decode(record, max_bytes)
    except _NotDecodableError as exc:
        return Undecodable(exc.problem, exc.source, exc.event_id, exc.subject)
    except Exception as exc:
        return Undecodable(
            Problem(ProblemKind.UNDECODABLE, f"record could not be decoded: {type(exc).__name__}")
        )


def _decode(record: RawRecord, max_bytes: int) -> Decoded:
    attributes, data, prefix, data_prefix = _content(record, max_bytes)
    fast = valid_event(attributes, data, data_prefix == "body")
    if fast is not None:  # the common case (worker/fastdecode.py); the models decide the rest
        return fast
    try:
        envelope, moment = _envelope(attributes, prefix)
    except _NotDecodableError as exc:
        raise _with_subject(exc, attributes, data) from None
    return _event(envelope, moment, attributes, data, data_prefix)


def _content(record: RawRecord, max_bytes: int) -> tuple[dict[str, Any], Any, str, str]:
    """The record's attributes and data by its content mode, and where each is in the
    record (the attributes' location prefix, the data's)."""
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
    media_type = _media_type(content_type) if content_type else None  # none: structured
    if media_type != STRUCTURED and f"{CE_PREFIX}specversion" in headers:
        attributes = _binary(headers)
        try:
            data = _json_value(value, "body") if value else _MISSING
        except _NotDecodableError as exc:
            raise _with_subject(exc, attributes, _MISSING) from None
        prefix, data_prefix = "headers.ce_", "body"
    else:
        if media_type not in (STRUCTURED, None):
            raise _NotDecodableError(
                Problem(
                    ProblemKind.UNDECODABLE,
                    "a record must be a CloudEvent: structured (content-type "
                    f"{STRUCTURED}) or binary (ce_* headers)",
                    (ErrorItem("headers.content-type", f"must be {STRUCTURED}", content_type),),
                )
            )
        if not value:
            raise _NotDecodableError(_empty_value(record.value))
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
        if "data_base64" in event:
            # binary data (CloudEvents JSON format): kept apart so the data rules say so
            data = _Base64(event.pop("data_base64"), data)
        attributes, prefix, data_prefix = event, "body.", "body.data"
    return attributes, data, prefix, data_prefix


_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class _Base64:
    """A structured event's ``data_base64`` (and its ``data``, which must not be there
    too): not accepted, the tag-moved data must be JSON."""

    encoded: Any
    data: Any

    def content(self) -> dict[str, Any]:
        """What the fingerprint sees of it."""
        shown = {"data_base64": self.encoded}
        return shown if self.data is _MISSING else {**shown, "data": self.data}


def _empty_value(value: bytes | None) -> Problem:
    """A tombstone or an empty value is no CloudEvent, whatever parsing would say."""
    what = "null (a Kafka tombstone)" if value is None else "empty"
    return Problem(
        ProblemKind.UNDECODABLE,
        f"the record value is {what}: a {'tombstone' if value is None else 'record'} with no "
        "value is not a CloudEvent (a structured CloudEvent is a JSON object)",
        (ErrorItem("body", "must be a CloudEvent, not an empty or null value", None),),
    )


def _with_subject(
    exc: _NotDecodableError, attributes: Mapping[str, Any], data: Any
) -> _NotDecodableError:
    """A 400 keeps the tag it is about, when the input names one validly."""
    exc.subject = _known_subject(attributes.get("subject"), data)
    return exc


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
    if content_type == STRUCTURED:  # as nearly every structured record spells it
        return STRUCTURED
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


def _binary(headers: Mapping[str, str]) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        name.removeprefix(CE_PREFIX): text
        for name, text in headers.items()
        if name.startswith(CE_PREFIX)
    }
    if "content-type" in headers:
        attributes["datacontenttype"] = headers["content-type"]
    return attributes


def _location(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = ".".join(str(part) for part in loc)
    if prefix == "headers.ce_" and path == "datacontenttype":
        return "headers.content-type"
    if prefix.endswith((".", "_")):
        return prefix + path
    return f"{prefix}.{path}" if path else prefix


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
        message = rule_message(err)
    value = raw.get(str(loc[0])) if loc and err["type"] != "missing" else None
    return ErrorItem(_location(prefix, loc), message, value)


def _envelope(attributes: dict[str, Any], prefix: str) -> tuple[EventAttributes, datetime]:
    """The valid envelope and the instant its ``time`` names (parsed once, by the
    model's validator)."""
    parsed: dict[str, Any] = {}
    try:
        envelope = EventAttributes.model_validate(attributes, context=parsed)
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
                breaks_rules("CloudEvents envelope", items),
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
    return envelope, parsed[PARSED_TIME]


def fingerprint(
    envelope: EventAttributes, moment: datetime, subject: str | None, data: Any
) -> bytes:
    """SHA-256 of the event's meaning: equal for the same event however it is spelled,
    different when an id is reused for other content.

    What counts: ``specversion``, ``id``, ``source``, ``type``; ``time`` as the instant
    it names (``moment``, parsed: UTC, to the microsecond events are ordered at, so
    ``.5Z``, ``.500000Z`` and ``+07:30`` spellings of one instant are equal); ``subject``
    and ``data`` as the caller reads them (``_event``: normalised when valid). Extension
    attributes and the content mode do not count. ``data`` is compared as JSON values,
    canonically encoded (sorted members, no white space, escapes resolved), so member
    order and white space do not matter; a number keeps its JSON type: ``1`` and ``1.0``
    differ (a valid event has only integers, ``expected_version``, and 1.0 is not one)."""
    return content_digest(
        specversion=envelope.specversion,
        event_id=envelope.id,
        source=envelope.source,
        kind=envelope.type,
        moment=moment,
        subject=subject,
        data=None if data is _MISSING else data,
    )


_DataModel = TagMovedData | TagDeletedData


def _data_items(
    data: Any, prefix: str, model: type[_DataModel], what: str
) -> tuple[_DataModel | None, list[ErrorItem]]:
    """The tag event's data (``what``: "tag-moved data" or "tag-deleted data"), or every
    rule it breaks."""
    if isinstance(data, _Base64):
        base64_item = ErrorItem(
            prefix + "_base64",
            f"is not accepted: the {what} must be JSON, a JSON object in 'data'",
            data.encoded,
        )
        if data.data is _MISSING:
            return None, [base64_item]
        _, items = _data_items(data.data, prefix, model, what)
        return None, [base64_item, *items]
    if data is _MISSING:
        whole = f"the {what} object" + (
            " (in binary mode the record value, which is empty)" if prefix == "body" else ""
        )
        return None, [ErrorItem(prefix, f"is required: {whole}", None)]
    if not isinstance(data, dict):
        return None, [ErrorItem(prefix, "must be a JSON object", data)]
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, _items(exc, prefix, data, what)


def _event(
    envelope: EventAttributes,
    moment: datetime,
    attributes: Mapping[str, Any],
    data: Any,
    prefix: str,
) -> Decoded:
    deleted = envelope.type == DELETED_EVENT_TYPE
    what = "tag-deleted data" if deleted else "tag-moved data"
    parsed, items = _data_items(data, prefix, TagDeletedData if deleted else TagMovedData, what)
    canonical_id = parsed.ocitag_id if parsed else _partial_id(data)
    subject_item = _subject_item(envelope.subject, canonical_id, attributes, prefix)
    if subject_item:
        items.append(subject_item)
    if items or parsed is None:
        raw = data.content() if isinstance(data, _Base64) else data
        return Invalid(
            source=envelope.source,
            id=envelope.id,
            fingerprint=fingerprint(envelope, moment, _normalized_or_raw(envelope.subject), raw),
            subject=canonical_id or _known_subject(envelope.subject, _MISSING),
            binary=prefix == "body",
            problem=Problem(
                ProblemKind.INVALID_DATA,
                breaks_rules(what, items, numbered=True),
                tuple(items),
            ),
        )
    # valid: the subject, if any, names the tag of data, so it adds nothing to the meaning
    meaning = parsed.model_dump(exclude_none=True)
    actor = parsed.actor if parsed.actor is not None else envelope.source
    if isinstance(parsed, TagDeletedData):
        return TagDeleted(
            source=envelope.source,
            id=envelope.id,
            fingerprint=fingerprint(envelope, moment, None, meaning),
            time=moment,
            repository=parsed.repository,
            tag=parsed.tag,
            actor=actor,
            previous_artifact=parsed.previous_artifact,
            expected_version=parsed.expected_version,
            binary=prefix == "body",
        )
    return TagMoved(
        source=envelope.source,
        id=envelope.id,
        fingerprint=fingerprint(envelope, moment, None, meaning),
        time=moment,
        repository=parsed.repository,
        tag=parsed.tag,
        artifact=parsed.artifact,
        actor=actor,
        previous_artifact=parsed.previous_artifact,
        expected_version=parsed.expected_version,
        binary=prefix == "body",
    )


def _normalized_or_raw(subject: str | None) -> str | None:
    if subject is None:
        return None
    try:
        return normalize_ocitag_id(subject)
    except InvalidIdentifierError:
        return subject


def _known_subject(subject: Any, data: Any) -> str | None:
    """The canonical OCITag ID an input is about: its data's when data names a valid
    tag, else its ``subject`` attribute's when that is a valid OCITag ID."""
    named = _partial_id(data)
    if named is not None or not isinstance(subject, str):
        return named
    try:
        return normalize_ocitag_id(subject)
    except InvalidIdentifierError:
        return None


def _partial_id(data: Any) -> str | None:
    """The canonical OCITag ID when repository and tag are valid though other members are
    not, so the rejection is keyed and filed under its tag."""
    if isinstance(data, _Base64):
        data = data.data
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
    if subject is None or canonical_id is None or subject == canonical_id:
        return None  # a canonical ID normalises to itself (tests/unit/test_identifiers.py)
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
