"""HTTP answers, built from an outcome or a problem. Pure.

A write's answer is its outcome: the status is the outcome's, a 200 carries the OCITag
record (``data``) and ``ETag: "<resourceversion>"``, anything else carries the outcome's
ErrorModel as ``application/problem+json``. The worker republishes the first outcome of a
repeated event byte for byte, so a repeated request gets the same answer. Only the
error locations are rewritten, from where the event carried a value to where the caller
put it (``body.data.artifact`` → ``body.artifact``, ``body.data.expected_version`` → the
conditional header it came from, ``body.id`` of an id reused → ``header.idempotency-key``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from worker.api.problems import ApiProblem
from worker.problems import PROBLEM_JSON

JSON = "application/json"
_DATA_PREFIX = "body.data."


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str | None = JSON
    headers: dict[str, str] = field(default_factory=dict)


def etag(version: int) -> str:
    return f'"{version}"'


def tag_location(ocitag_id: str) -> str:
    """``/ocitags/{tag}/`` with the ID percent-encoded (its slashes too): the path
    template's own form."""
    return f"/ocitags/{quote(ocitag_id, safe=':')}/"


def record(data: dict[str, Any], version: int) -> Reply:
    return Reply(200, orjson.dumps(data), JSON, {"ETag": etag(version)})


def _location(location: Any, version_header: str) -> Any:
    if location == "body.id":  # an api event's id is the caller's Idempotency-Key
        return "header.idempotency-key"
    if not isinstance(location, str) or not location.startswith(_DATA_PREFIX):
        return location
    member = location.removeprefix(_DATA_PREFIX)
    if member == "expected_version":
        return f"header.{version_header}"
    if member in ("repository", "tag"):
        return "path.tag"
    return f"body.{member}"


def from_outcome(outcome: dict[str, Any], *, version_header: str = "if-match") -> Reply:
    """The answer to a write whose outcome arrived."""
    status = outcome.get("status")
    data = outcome.get("data")
    if status == 200 and isinstance(data, dict):
        return record(data, int(outcome.get("resourceversion") or 0))
    if not isinstance(status, int) or not isinstance(data, dict):
        raise ValueError("not an outcome: no status or data")
    errors = data.get("errors")
    if isinstance(errors, list):
        data = {
            **data,
            "errors": [
                {**e, "location": _location(e.get("location"), version_header)}
                if isinstance(e, dict)
                else e
                for e in errors
            ],
        }
    return Reply(status, orjson.dumps(data), PROBLEM_JSON)


def problem(
    exc: ApiProblem, *, base_uri: str, instance: str, retry_after: int | None = None
) -> Reply:
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="ocitag-worker"'
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    elif exc.status in (429, 503) and retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Reply(
        exc.status, orjson.dumps(exc.error_model(base_uri, instance)), PROBLEM_JSON, headers
    )


def accepted(ocitag_id: str, source: str, event_id: str) -> Reply:
    """202: the event is on the input topic and will be applied; its outcome did not
    arrive in time. ``Location`` is where to read the tag afterwards."""
    location = tag_location(ocitag_id)
    body = {"status": "accepted", "source": source, "id": event_id, "location": location}
    return Reply(202, orjson.dumps(body), JSON, {"Location": location})


def not_modified(version: int) -> Reply:
    return Reply(304, b"", None, {"ETag": etag(version)})


def page(items: list[dict[str, Any]], next_cursor: str | None, next_link: str | None) -> Reply:
    headers = {"Link": f'<{next_link}>; rel="next"'} if next_link else {}
    return Reply(200, orjson.dumps({"items": items, "next": next_cursor}), JSON, headers)
