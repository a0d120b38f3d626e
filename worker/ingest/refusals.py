"""How a refused delivery is answered: the status, the cause (the metric label) and an
RFC 9457 body from the one catalogue (``worker.problems``), or a bare title and status
(401, 404, 405, 408, 500 say nothing more). Pure.
"""

from __future__ import annotations

import uuid
from typing import Any

from worker.headers import SENT_ONCE, repeated_item
from worker.ingest.mapping import MappingError
from worker.problems import ErrorItem, Problem, ProblemKind, about_blank, error_model


class RefusedError(Exception):
    """The delivery ends with this answer (a problem, or a bare status)."""

    def __init__(self, status: int, cause: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(cause)
        self.status = status
        self.cause = cause
        self.body = body or about_blank(status)
        self.headers: dict[str, str] = {}


def _body(base_uri: str, problem: Problem, instance: str | None = None) -> dict[str, Any]:
    """A delivery has no record to name: its instance is the delivery id, or a fresh one."""
    return error_model(problem, base_uri, instance or f"urn:uuid:{uuid.uuid4()}")


def unmappable(base_uri: str, exc: MappingError, delivery_id: str) -> RefusedError:
    problem = Problem(
        ProblemKind.UNMAPPABLE_DELIVERY,
        f"{exc.location} {exc.message}",
        (ErrorItem(exc.location, exc.message, exc.value),),
    )
    return RefusedError(400, "unmappable", _body(base_uri, problem, f"urn:uuid:{delivery_id}"))


def repeated_headers(base_uri: str, names: list[str]) -> RefusedError:
    """400 naming each proof header sent more than once (never their values)."""
    problem = Problem(
        ProblemKind.MALFORMED_REQUEST,
        f"{', '.join(names)} must be sent once; nothing was checked",
        tuple(repeated_item(name, SENT_ONCE) for name in names),
    )
    return RefusedError(400, "repeated_header", _body(base_uri, problem))


def too_large(base_uri: str, limit: int, size: int) -> RefusedError:
    # the api's type for the same thing (not too-large: the worker's 400 record outcome)
    problem = Problem(
        ProblemKind.REQUEST_TOO_LARGE,
        f"the delivery is over {limit} bytes (OCITAG_INGEST_MAX_BODY_BYTES)",
        (ErrorItem("body", f"must be at most {limit} bytes", size),),
    )
    return RefusedError(413, "too_large", _body(base_uri, problem))


def unresolved(base_uri: str, detail: str) -> RefusedError:
    problem = Problem(ProblemKind.UNRESOLVED_DIGEST, detail)
    return RefusedError(502, "unresolved_digest", _body(base_uri, problem))


def unavailable(base_uri: str, detail: str, retry_after: int) -> RefusedError:
    problem = Problem(ProblemKind.KAFKA_UNAVAILABLE, f"nothing was accepted: {detail}")
    refused = RefusedError(503, "kafka_unavailable", _body(base_uri, problem))
    refused.headers["Retry-After"] = str(retry_after)
    return refused


def host_not_allowed(base_uri: str, items: list[ErrorItem], delivery_id: str) -> RefusedError:
    """403 naming every entry whose registry host the receiver may not speak for."""
    problem = Problem(
        ProblemKind.HOST_NOT_ALLOWED,
        f"the delivery names {len(items)} repositories on hosts this receiver may not speak "
        "for; nothing was published",
        tuple(items),
    )
    return RefusedError(
        403, "host_not_allowed", _body(base_uri, problem, f"urn:uuid:{delivery_id}")
    )
