"""The decoder as it was before its hot path was trimmed (issue "Close to the floor"),
kept ONLY as the oracle of tests/unit/test_decode_oracle.py: every record must decode to
the same decision (event, fingerprint, problem) as this decodes it. Here, as it was: the
content type read twice, the time parsed again after the envelope's validator parsed it,
the fingerprint's attributes gathered by name, a subject normalised even when it is the
data's canonical ID. It shares with the worker what the change did not touch: the
models and identifier functions (a remembered source check decides as the regular
expression did), the envelope's validation and its problem (``_envelope``, its parsed
time set aside), the JSON and header readers, the data rules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from worker import decode as worker_decode
from worker.decode import (
    _MISSING,
    CE_PREFIX,
    _Base64,
    _binary,
    _data_items,
    _empty_value,
    _header_map,
    _json_value,
    _known_subject,
    _media_type,
    _normalized_or_raw,
    _NotDecodableError,
    _partial_id,
    _with_subject,
)
from worker.events import Decoded, Invalid, RawRecord, TagDeleted, TagMoved, Undecodable
from worker.identifiers import InvalidIdentifierError, normalize_ocitag_id
from worker.models import (
    DELETED_EVENT_TYPE,
    STRUCTURED,
    EventAttributes,
    TagDeletedData,
    TagMovedData,
)
from worker.problems import ErrorItem, Problem, ProblemKind, breaks_rules
from worker.timefmt import parse_rfc3339

_FINGERPRINTED = ("specversion", "id", "source", "type")


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
        attributes = _binary(headers)
        try:
            data = _json_value(value, "body") if value else _MISSING
        except _NotDecodableError as exc:
            raise _with_subject(exc, attributes, _MISSING) from None
        prefix, data_prefix = "headers.ce_", "body"
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
    try:
        envelope = _envelope(attributes, prefix)
    except _NotDecodableError as exc:
        raise _with_subject(exc, attributes, data) from None
    return _event(envelope, attributes, data, data_prefix)


def _envelope(attributes: dict[str, Any], prefix: str) -> EventAttributes:
    return worker_decode._envelope(attributes, prefix)[0]


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
    content = {name: getattr(envelope, name) for name in _FINGERPRINTED}
    content["time"] = moment.isoformat()  # parse_rfc3339 gives UTC: one text per instant
    content["subject"] = subject
    content["data"] = None if data is _MISSING else data
    try:
        canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits: only the standard encoder takes them
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).digest()


def _event(
    envelope: EventAttributes, attributes: Mapping[str, Any], data: Any, prefix: str
) -> Decoded:
    moment = parse_rfc3339(envelope.time)
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
