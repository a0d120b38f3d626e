"""The problem catalogue (RFC 9457): every problem any command answers or publishes, one
absolute type URI per kind, and the one renderer of its body (the seed's ErrorModel).
Pure.

The worker publishes its kinds in outcomes; the api and ingest answer theirs over HTTP
(the api passes the worker's through). Each component keeps only its exception types.
docs/problems.md lists the same catalogue for people; a test keeps the two equal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from http import HTTPStatus
from typing import Any

from worker.frozen import fast_init

MAX_VALUE_CHARS = 200
#: the media type of an RFC 9457 problem document (outcomes, ingest and the api)
PROBLEM_JSON = "application/problem+json"


class Sender(StrEnum):
    """Who sends a kind: the worker publishes it in an outcome; the api and ingest answer
    it over HTTP."""

    WORKER = "worker"
    API = "api"
    INGEST = "ingest"


_WORKER = frozenset({Sender.WORKER})
_API = frozenset({Sender.API})
_INGEST = frozenset({Sender.INGEST})


class ProblemKind(Enum):
    """Each kind: (slug, status, title, senders). The slug is appended to the base URI.

    The worker's slugs, statuses and titles are in published outcomes, compared byte for
    byte on replay: they do not change."""

    # the worker's, published in outcomes
    UNDECODABLE = ("undecodable", 400, "Record is not decodable", _WORKER)
    INVALID_ENVELOPE = ("invalid-envelope", 400, "Invalid CloudEvents envelope", _WORKER)
    UNKNOWN_TYPE = ("unknown-type", 400, "Unknown event type", _WORKER)
    TOO_LARGE = ("too-large", 400, "Record too large", _WORKER)
    # the api answers a read or deletion of a missing tag with it too: one meaning, one type
    NOT_FOUND = ("not-found", 404, "Tag not found", frozenset({Sender.WORKER, Sender.API}))
    SUPERSEDED = ("superseded", 409, "Superseded by a newer event", _WORKER)
    ID_REUSED = ("id-reused", 409, "Event id reused with different content", _WORKER)
    PRECONDITION_FAILED = ("precondition-failed", 412, "Precondition failed", _WORKER)
    INVALID_DATA = ("invalid-data", 422, "Invalid tag event data", _WORKER)
    INTERNAL = ("internal", 500, "Event could not be processed", _WORKER)
    # the api's own answers
    MALFORMED_REQUEST = (
        "malformed-request",
        400,
        "Malformed request",
        frozenset({Sender.API, Sender.INGEST}),
    )
    UNAUTHORIZED = ("unauthorized", 401, "Unauthorized", _API)
    FORBIDDEN = ("forbidden", 403, "Forbidden", _API)
    NO_ROUTE = ("no-route", 404, "No such resource", _API)
    METHOD_NOT_ALLOWED = ("method-not-allowed", 405, "Method not allowed", _API)
    REQUEST_TOO_LARGE = (
        "request-too-large",
        413,
        "Request body too large",
        frozenset({Sender.API, Sender.INGEST}),
    )
    UNSUPPORTED_MEDIA_TYPE = ("unsupported-media-type", 415, "Unsupported media type", _API)
    INVALID_REQUEST = ("invalid-request", 422, "Invalid request", _API)
    RATE_LIMITED = ("rate-limited", 429, "Too many requests", _API)
    TOO_MANY_WATCHES = ("too-many-watches", 429, "Too many watches", _API)
    UNEXPECTED_ERROR = ("unexpected-error", 500, "Unexpected error", _API)
    UNAVAILABLE = ("unavailable", 503, "Service unavailable", _API)
    # ingest's own answers
    UNMAPPABLE_DELIVERY = ("unmappable-delivery", 400, "Delivery could not be mapped", _INGEST)
    HOST_NOT_ALLOWED = ("host-not-allowed", 403, "Registry host not allowed", _INGEST)
    UNRESOLVED_DIGEST = ("unresolved-digest", 502, "Digest could not be resolved", _INGEST)
    KAFKA_UNAVAILABLE = ("kafka-unavailable", 503, "Kafka unavailable", _INGEST)

    def __init__(self, slug: str, status: int, title: str, senders: frozenset[Sender]) -> None:
        self.slug = slug
        self.status = status
        self.title = title
        self.senders = senders

    @property
    def published(self) -> bool:
        """The worker publishes it in an outcome."""
        return Sender.WORKER in self.senders

    @property
    def dead_letter(self) -> bool:
        """The worker's 400s are copied to the dead-letter topic with their original headers."""
        return self.published and self.status == 400

    @property
    def terse(self) -> bool:
        """Its body says nothing beyond type, title and status (a 401 tells no prober why)."""
        return self is ProblemKind.UNAUTHORIZED


@fast_init
@dataclass(frozen=True, slots=True)
class ErrorItem:
    """One broken rule: where, which rule in plain words, and the offending value."""

    location: str
    message: str
    value: Any = None

    def as_json(self) -> dict[str, Any]:
        return {"location": self.location, "message": self.message, "value": shorten(self.value)}


@fast_init
@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    detail: str
    errors: tuple[ErrorItem, ...] = field(default=())

    @property
    def status(self) -> int:
        return self.kind.status


def shorten(value: Any) -> Any:
    """Large offending values are cut so a problem record stays small."""
    if type(value) is str and len(value) <= MAX_VALUE_CHARS and value.isascii():
        return value  # the usual value (a time, an id, a digest): nothing to escape or cut
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        # lone surrogates (from JSON escapes) cannot be encoded: show them escaped
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "…"
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        return json.loads(text) if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    return shorten(str(value))


def error_model(problem: Problem, base_uri: str, instance: str) -> dict[str, Any]:
    """The seed's ErrorModel for a problem, published or answered: exactly its members, in
    a fixed order (outcomes are compared byte for byte). A terse kind stops at status."""
    kind = problem.kind
    if kind.terse:
        return {"type": base_uri + kind.slug, "title": kind.title, "status": kind.status}
    # one literal (a 409 superseded builds one per late event: a third of a drain's)
    return {
        "type": base_uri + kind.slug,
        "title": kind.title,
        "status": kind.status,
        "detail": problem.detail,
        "instance": instance,
        "errors": [item.as_json() for item in problem.errors],
    }


def about_blank(status: int, title: str | None = None) -> dict[str, Any]:
    """A problem with no type of ours (RFC 9457 "about:blank"): a title, the status's own
    phrase unless given, and the status; for answers that say nothing more."""
    return {"title": title or HTTPStatus(status).phrase, "status": status}


def breaks_rules(what: str, items: Sequence[ErrorItem], *, numbered: bool = False) -> str:
    """The detail of a problem listing every broken rule: "the <what> breaks a rule:
    <location> <message>; …". ``numbered`` spells a single rule "1 rule": the tag-moved
    data's published wording, kept as it is (outcomes are compared byte for byte)."""
    count = len(items)
    rules = f"{count} rules" if count != 1 else ("1 rule" if numbered else "a rule")
    return f"the {what} breaks {rules}: " + "; ".join(f"{i.location} {i.message}" for i in items)
