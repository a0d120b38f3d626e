"""The pieces every operation of the OpenAPI document shares (worker/api/openapi.py and
openapi_history.py): a problem response, a component reference, and the responses of
the doors every operation passes (authentication, grants, rate limit, Kafka). Pure."""

from __future__ import annotations

from typing import Any

Doc = dict[str, Any]

PROBLEM = {"$ref": "#/components/schemas/ErrorModel"}


def problem(description: str, headers: Doc | None = None) -> Doc:
    """A response with an RFC 9457 problem body."""
    response: Doc = {
        "description": description,
        "content": {"application/problem+json": {"schema": PROBLEM}},
    }
    if headers:
        response["headers"] = headers
    return response


def ref(kind: str, name: str) -> Doc:
    return {"$ref": f"#/components/{kind}/{name}"}


#: what any operation may answer before it does its own work
COMMON: Doc = {
    "400": problem(
        "The Authorization header was sent more than once, or with values joined by a "
        "comma (a single-valued field); errors[] names header.authorization."
    ),
    "401": ref("responses", "Unauthorized"),
    "403": ref("responses", "Forbidden"),
    "429": ref("responses", "TooManyRequests"),
    "503": ref("responses", "Unavailable"),
}
