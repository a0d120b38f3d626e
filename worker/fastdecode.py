"""The common case of decoding, without pydantic: a well-formed tag event's envelope and
data checked by the contract's rules in plain Python, and its event built directly.

Why hand-written: in a drain every record is a valid tag event, and validating it through
the models (``EventAttributes`` and ``TagMovedData``: pydantic-core calling back into the
identifier functions, then ``model_dump`` for the fingerprint) was about half of
decoding's CPU (docs/scaling.md). Here each rule is one comparison or one call of the
same function the models call (``worker.identifiers``, ``parse_rfc3339``, the models'
text checks).

It only ever says *yes*: ``valid_event`` answers the event when every rule holds and
None for anything else — a rule broken, a type not exactly what JSON or a header gives,
anything unusual — and the caller then decides the input by the models
(``worker/decode.py``), which word every problem. So no problem and no refusal is
decided here, and an event it answers is the event the models would make:
``tests/unit/test_fastdecode.py`` holds both on generated good and bad inputs (and
``tests/unit/test_decode_oracle.py`` holds the whole decoder to the previous one).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from worker.events import TagDeleted, TagEvent, TagMoved
from worker.identifiers import (
    normalize_digest,
    normalize_ocitag_id,
    normalize_repository,
    validate_tag,
)
from worker.models import (
    DELETED_EVENT_TYPE,
    EVENT_TYPE,
    MAX_ACTOR_LENGTH,
    MAX_ID_LENGTH,
    MAX_SOURCE_LENGTH,
    MAX_VERSION,
    clean_text,
    uri_reference,
)
from worker.timefmt import parse_rfc3339

SPECVERSION = "1.0"
_MOVED_MEMBERS = frozenset(
    {"repository", "tag", "artifact", "actor", "previous_artifact", "expected_version"}
)
_DELETED_MEMBERS = _MOVED_MEMBERS - {"artifact"}
#: the usual spelling of an event's time: UTC as 'Z', at most microseconds. Within this
#: grammar ``datetime.fromisoformat`` reads the text as ``parse_rfc3339`` reads it (same
#: instant, same ``UTC``; tests/unit/test_fastdecode.py), without the rebuilt text.
_ZULU_TIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9](?:\.[0-9]{1,6})?Z"
)


def content_digest(
    *,
    specversion: str,
    event_id: str,
    source: str,
    kind: str,
    moment: datetime,
    subject: str | None,
    data: Any,
) -> bytes:
    """SHA-256 of an event's canonical content (``worker.decode.fingerprint`` says what
    counts and why)."""
    content = {
        "specversion": specversion,
        "id": event_id,
        "source": source,
        "type": kind,
        # parsed to UTC: one text per instant. orjson writes an aware datetime as
        # isoformat() does (tests/unit/test_decode.py holds the bytes equal), in C
        "time": moment,
        "subject": subject,
        "data": data,
    }
    try:
        canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits: only the standard encoder takes them
        content["time"] = moment.isoformat()
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).digest()


def _text(value: Any, longest: int) -> bool:
    """A string as ``EventAttributes.id`` and the actor take it: 1 to ``longest``
    characters, no NUL, no lone surrogate."""
    return type(value) is str and 0 < len(value) <= longest and clean_text(value)


def _moment(attributes: Mapping[str, Any]) -> datetime | None:
    """The envelope's ``time`` when it and every other envelope rule hold (the type is
    the caller's to check); else None."""
    event_id, source = attributes.get("id"), attributes.get("source")
    if not (
        attributes.get("specversion") == SPECVERSION
        and _text(event_id, MAX_ID_LENGTH)
        and type(source) is str
        and 0 < len(source) <= MAX_SOURCE_LENGTH
        and uri_reference(source)
    ):
        return None
    subject = attributes.get("subject")
    if subject is not None and not (type(subject) is str and clean_text(subject)):
        return None
    content_type = attributes.get("datacontenttype")
    if content_type is not None and not (
        type(content_type) is str
        and content_type.split(";")[0].strip().lower() == "application/json"
    ):
        return None
    time = attributes.get("time")
    return instant(time) if type(time) is str else None


def instant(text: str) -> datetime | None:
    """The instant ``parse_rfc3339`` reads in ``text``, or None where it refuses it."""
    try:
        if _ZULU_TIME_RE.fullmatch(text):
            return datetime.fromisoformat(text)
        return parse_rfc3339(text)
    except ValueError:
        return None


def _string(value: Any) -> str:
    """A member that must be a string (ValueError when it is not, absent among them)."""
    if type(value) is not str:
        raise ValueError("not a string")
    return value


def _meaning(data: dict[str, Any], moved: bool) -> dict[str, Any] | None:
    """The data as the models hold it, normalised, without its absent or null members
    (what the fingerprint reads); None when a rule is broken."""
    get = data.get
    actor, expected = get("actor"), get("expected_version")
    if (actor is not None and not _text(actor, MAX_ACTOR_LENGTH)) or (
        expected is not None and not (type(expected) is int and 0 <= expected <= MAX_VERSION)
    ):
        return None
    previous = get("previous_artifact")
    try:
        meaning: dict[str, Any] = {
            "repository": normalize_repository(_string(get("repository"))),
            "tag": validate_tag(_string(get("tag"))),
        }
        if moved:
            meaning["artifact"] = normalize_digest(_string(get("artifact")))
        if previous is not None:
            meaning["previous_artifact"] = normalize_digest(_string(previous))
    except ValueError:  # InvalidIdentifierError among them
        return None
    if actor is not None:
        meaning["actor"] = actor
    if expected is not None:
        meaning["expected_version"] = expected
    return meaning


def _names(subject: str | None, canonical_id: str) -> bool:
    """No subject, or one naming the data's tag (spelled any way that normalises to it)."""
    if subject is None or subject == canonical_id:
        return True  # a canonical ID normalises to itself
    try:
        return normalize_ocitag_id(subject) == canonical_id
    except ValueError:
        return False


_MEMBERS = {EVENT_TYPE: _MOVED_MEMBERS, DELETED_EVENT_TYPE: _DELETED_MEMBERS}


def valid_event(attributes: Mapping[str, Any], data: Any, binary: bool) -> TagEvent | None:
    """The tag event when the envelope (``attributes``) and ``data`` keep every rule,
    the subject (if any) naming data's tag; None when anything is otherwise."""
    kind: Any = attributes.get("type")
    members = _MEMBERS.get(kind) if type(kind) is str else None
    if members is None or type(data) is not dict or not data.keys() <= members:
        return None
    moment = _moment(attributes)
    if moment is None:
        return None
    meaning = _meaning(data, kind == EVENT_TYPE)
    if meaning is None or not _names(
        attributes.get("subject"), f"{meaning['repository']}:{meaning['tag']}"
    ):
        return None
    repository, tag = meaning["repository"], meaning["tag"]
    source: str = attributes["source"]
    event_id: str = attributes["id"]
    fingerprint = content_digest(
        specversion=SPECVERSION, event_id=event_id, source=source, kind=kind,
        moment=moment, subject=None, data=meaning,
    )  # fmt: skip
    get = meaning.get
    actor = get("actor", source)
    previous, expected = get("previous_artifact"), get("expected_version")
    if kind == DELETED_EVENT_TYPE:
        return TagDeleted(
            source, event_id, fingerprint, moment, repository, tag, actor, previous, expected,
            binary,
        )  # fmt: skip
    return TagMoved(
        source, event_id, fingerprint, moment, repository, tag, meaning["artifact"], actor,
        previous, expected, binary,
    )  # fmt: skip
