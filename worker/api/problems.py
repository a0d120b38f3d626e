"""The API's own problems (RFC 9457, the seed's ErrorModel): what it answers before an
event exists or without one. Pure. Outcome problems (409, 412, 422 from the worker …)
are the worker's catalogue, passed through unchanged but for the error locations.

The ``type`` URIs share the worker's base (``OCITAG_PROBLEM_BASE_URI``); the slugs are
listed in the README's API section.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from worker.problems import ErrorItem, ProblemKind


class ApiProblemKind(Enum):
    """Each kind: (slug, status, title)."""

    MALFORMED_REQUEST = ("malformed-request", 400, "Malformed request")
    UNAUTHORIZED = ("unauthorized", 401, "Unauthorized")
    # the worker's own kind for a deletion of a missing tag: one meaning, one type
    NOT_FOUND = (
        ProblemKind.NOT_FOUND.slug,
        ProblemKind.NOT_FOUND.status,
        ProblemKind.NOT_FOUND.title,
    )
    NO_ROUTE = ("no-route", 404, "No such resource")
    METHOD_NOT_ALLOWED = ("method-not-allowed", 405, "Method not allowed")
    REQUEST_TOO_LARGE = ("request-too-large", 413, "Request body too large")
    UNSUPPORTED_MEDIA_TYPE = ("unsupported-media-type", 415, "Unsupported media type")
    INVALID_REQUEST = ("invalid-request", 422, "Invalid request")
    INTERNAL = ("internal-error", 500, "Internal error")
    UNAVAILABLE = ("unavailable", 503, "Service unavailable")

    def __init__(self, slug: str, status: int, title: str) -> None:
        self.slug = slug
        self.status = status
        self.title = title


class ApiProblem(Exception):  # noqa: N818 - raised and answered as the problem it is
    """A problem answered as it is; raised from deep inside a handler."""

    def __init__(
        self, kind: ApiProblemKind, detail: str | None = None, errors: tuple[ErrorItem, ...] = ()
    ) -> None:
        super().__init__(detail or kind.title)
        self.kind = kind
        self.detail = detail
        self.errors = errors

    @property
    def status(self) -> int:
        return self.kind.status

    def error_model(self, base_uri: str, instance: str) -> dict[str, Any]:
        """The seed's ErrorModel; a 401 says nothing beyond its status."""
        model: dict[str, Any] = {
            "type": base_uri + self.kind.slug,
            "title": self.kind.title,
            "status": self.kind.status,
        }
        if self.kind is ApiProblemKind.UNAUTHORIZED:
            return model
        model["detail"] = self.detail or self.kind.title
        model["instance"] = instance
        model["errors"] = [item.as_json() for item in self.errors]
        return model


def too_large(limit: int, size: int | None) -> ApiProblem:
    """413 naming the limit and its setting (``size``: the Content-Length, if sent)."""
    return ApiProblem(
        ApiProblemKind.REQUEST_TOO_LARGE,
        f"the body is over {limit} bytes (OCITAG_API_MAX_BODY_BYTES)",
        (ErrorItem("body", f"must be at most {limit} bytes", size),),
    )


def invalid(*items: ErrorItem) -> ApiProblem:
    """422 listing every broken rule."""
    return ApiProblem(
        ApiProblemKind.INVALID_REQUEST,
        "the request breaks "
        + ("a rule" if len(items) == 1 else f"{len(items)} rules")
        + ": "
        + "; ".join(f"{i.location} {i.message}" for i in items),
        items,
    )


def unpublished() -> ApiProblem:
    """503 for a write refused before its event reached the producer (Kafka known to be
    unreachable): nothing will happen unless it is retried."""
    return ApiProblem(
        ApiProblemKind.UNAVAILABLE,
        "Kafka is unreachable: the event was not published; retry later",
    )


def unacknowledged() -> ApiProblem:
    """503 for a write whose event the producer took but Kafka did not acknowledge in
    time: the producer may still deliver it, and then it is applied."""
    return ApiProblem(
        ApiProblemKind.UNAVAILABLE,
        "Kafka did not acknowledge the event in time: it may still be published and "
        "applied; retry with the same Idempotency-Key",
    )
