"""How a refused delivery is answered: the status, the cause (the metric label) and an
RFC 9457 body in the seed's ErrorModel shape, or a bare title and status (401, 404, 408,
500 say nothing more). Pure.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from worker.ingest.mapping import MappingError
from worker.problems import ErrorItem

TITLES = {
    400: "Delivery could not be mapped",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    500: "Internal Server Error",
    502: "Digest could not be resolved",
    503: "Kafka unavailable",
}


class RefusedError(Exception):
    """The delivery ends with this answer (a problem, or a bare status)."""

    def __init__(self, status: int, cause: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(cause)
        self.status = status
        self.cause = cause
        self.body = body or bare(status)
        self.headers: dict[str, str] = {}


def bare(status: int) -> dict[str, Any]:
    return {"title": TITLES.get(status, "Error"), "status": status}


def problem(
    base_uri: str,
    status: int,
    slug: str,
    detail: str,
    errors: Sequence[ErrorItem] = (),
    *,
    instance: str | None = None,
) -> dict[str, Any]:
    """The seed's ErrorModel shape (RFC 9457)."""
    return {
        "type": base_uri + slug,
        "title": TITLES[status],
        "status": status,
        "detail": detail,
        "instance": instance or f"urn:uuid:{uuid.uuid4()}",
        "errors": [item.as_json() for item in errors],
    }


def unmappable(base_uri: str, exc: MappingError, delivery_id: str) -> RefusedError:
    body = problem(
        base_uri,
        400,
        "unmappable-delivery",
        f"{exc.location} {exc.message}",
        [ErrorItem(exc.location, exc.message, exc.value)],
        instance=f"urn:uuid:{delivery_id}",
    )
    return RefusedError(400, "unmappable", body)


def too_large(base_uri: str, limit: int, size: int) -> RefusedError:
    body = problem(
        base_uri,
        413,
        "request-too-large",  # the API's type for the same thing (not the 400 record one)
        f"the delivery is over {limit} bytes (OCITAG_INGEST_MAX_BODY_BYTES)",
        [ErrorItem("body", f"must be at most {limit} bytes", size)],
    )
    return RefusedError(413, "too_large", body)


def unresolved(base_uri: str, detail: str) -> RefusedError:
    return RefusedError(
        502, "unresolved_digest", problem(base_uri, 502, "unresolved-digest", detail)
    )


def unavailable(base_uri: str, detail: str, retry_after: int) -> RefusedError:
    body = problem(base_uri, 503, "kafka-unavailable", f"nothing was accepted: {detail}")
    refused = RefusedError(503, "kafka_unavailable", body)
    refused.headers["Retry-After"] = str(retry_after)
    return refused
