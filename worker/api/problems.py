"""The API's problem exception and the problems it raises before an event exists or
without one. Pure. The kinds, their type URIs and the rendering are the one catalogue's
(``worker.problems``); outcome problems (409, 412, 422 from the worker …) are passed
through unchanged but for the error locations.
"""

from __future__ import annotations

from typing import Any

from worker.problems import ErrorItem, Problem, ProblemKind, breaks_rules, error_model


class ApiProblem(Exception):  # noqa: N818 - raised and answered as the problem it is
    """A problem answered as it is; raised from deep inside a handler."""

    def __init__(
        self,
        kind: ProblemKind,
        detail: str | None = None,
        errors: tuple[ErrorItem, ...] = (),
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail or kind.title)
        self.kind = kind
        self.detail = detail
        self.errors = errors
        #: seconds for a ``Retry-After`` of its own (429); a 503 takes the setting's
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return self.kind.status

    def error_model(self, base_uri: str, instance: str) -> dict[str, Any]:
        """The seed's ErrorModel; the detail is the title when none is given."""
        problem = Problem(self.kind, self.detail or self.kind.title, self.errors)
        return error_model(problem, base_uri, instance)


def too_large(limit: int, size: int | None) -> ApiProblem:
    """413 naming the limit and its setting (``size``: the Content-Length, if sent)."""
    return ApiProblem(
        ProblemKind.REQUEST_TOO_LARGE,
        f"the body is over {limit} bytes (OCITAG_API_MAX_BODY_BYTES)",
        (ErrorItem("body", f"must be at most {limit} bytes", size),),
    )


def invalid(*items: ErrorItem) -> ApiProblem:
    """422 listing every broken rule."""
    return ApiProblem(ProblemKind.INVALID_REQUEST, breaks_rules("request", items), items)


def unpublished() -> ApiProblem:
    """503 for a write refused before its event reached the producer (Kafka known to be
    unreachable): nothing will happen unless it is retried."""
    return ApiProblem(
        ProblemKind.UNAVAILABLE,
        "Kafka is unreachable: the event was not published; retry later",
    )


def unacknowledged() -> ApiProblem:
    """503 for a write whose event the producer took but Kafka did not acknowledge in
    time: the producer may still deliver it, and then it is applied."""
    return ApiProblem(
        ProblemKind.UNAVAILABLE,
        "Kafka did not acknowledge the event in time: it may still be published and "
        "applied; retry with the same Idempotency-Key",
    )


def unavailable(what: str) -> ApiProblem:
    """503 for a request whose backend (``kafka``, ``db``) is not connected."""
    return ApiProblem(ProblemKind.UNAVAILABLE, f"{what} is not available; retry later")
