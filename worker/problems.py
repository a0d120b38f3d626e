"""The problem catalogue (RFC 9457): one absolute type URI per kind of rejection.

docs/problems.md lists the same catalogue for people; a test keeps the two in sync.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

MAX_VALUE_CHARS = 200
#: the media type of an RFC 9457 problem document (outcomes, ingest and the api)
PROBLEM_JSON = "application/problem+json"


class ProblemKind(Enum):
    """Each kind: (slug, status, title). The slug is appended to the base URI."""

    UNDECODABLE = ("undecodable", 400, "Record is not decodable")
    INVALID_ENVELOPE = ("invalid-envelope", 400, "Invalid CloudEvents envelope")
    UNKNOWN_TYPE = ("unknown-type", 400, "Unknown event type")
    TOO_LARGE = ("too-large", 400, "Record too large")
    NOT_FOUND = ("not-found", 404, "Tag not found")
    SUPERSEDED = ("superseded", 409, "Superseded by a newer event")
    ID_REUSED = ("id-reused", 409, "Event id reused with different content")
    PRECONDITION_FAILED = ("precondition-failed", 412, "Precondition failed")
    INVALID_DATA = ("invalid-data", 422, "Invalid tag event data")
    INTERNAL = ("internal", 500, "Event could not be processed")

    def __init__(self, slug: str, status: int, title: str) -> None:
        self.slug = slug
        self.status = status
        self.title = title

    @property
    def dead_letter(self) -> bool:
        """400s are copied to the dead-letter topic with their original headers."""
        return self.status == 400


@dataclass(frozen=True, slots=True)
class ErrorItem:
    """One broken rule: where, which rule in plain words, and the offending value."""

    location: str
    message: str
    value: Any = None

    def as_json(self) -> dict[str, Any]:
        return {"location": self.location, "message": self.message, "value": shorten(self.value)}


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


def problem_type_uri(base: str, kind: ProblemKind) -> str:
    return base + kind.slug


def error_model(problem: Problem, base_uri: str, instance: str) -> dict[str, Any]:
    """The seed's ErrorModel for a problem: exactly its members, in a fixed order."""
    return {
        "type": problem_type_uri(base_uri, problem.kind),
        "title": problem.kind.title,
        "status": problem.kind.status,
        "detail": problem.detail,
        "instance": instance,
        "errors": [item.as_json() for item in problem.errors],
    }
