"""The API's OpenAPI 3.1 document (``GET /openapi.json``). Pure.

The seed's ``oci-tag-update`` operation, ``OCITag``, ``ErrorModel`` and ``ErrorDetail``
come verbatim from ``seed.json`` (the seed page's own text; a test holds it equal to
``schemas/seed/``). The operation is only extended: members the seed does not have
(``parameters``, ``requestBody``, the other statuses, response headers) are added, none
of the seed's is changed — ``extend`` refuses to. Then the other operations.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources

from worker import __version__, identifiers
from worker.api import openapi_history
from worker.api.openapi_parts import COMMON, Doc, problem, ref
from worker.api.requests import MAX_KEY_CHARS
from worker.identifiers import anchored
from worker.models import DIGEST_PATTERN, MAX_ACTOR_LENGTH

# The OCITag ID grammar of docs/contract.md "Identifiers" as one pattern, for generators and
# readers of the document (the API checks with worker.identifiers, which also limits the
# repository to 255 characters and names the broken rule).
OCITAG_ID_PATTERN = anchored(identifiers.OCITAG_ID_PATTERN)
_RECORD = {"$ref": "#/components/schemas/OCITag"}


@cache
def seed() -> Doc:
    """The seed's operation and schemas (package data, equal to schemas/seed/)."""
    text = resources.files("worker.api").joinpath("seed.json").read_text(encoding="utf-8")
    loaded: Doc = json.loads(text)
    return loaded


def extend(base: Doc, additions: Doc, where: str = "") -> Doc:
    """``base`` with the members of ``additions`` added, recursively; a member both have
    must be an object on both sides (then merged) — a changed value is a bug."""
    out = copy.deepcopy(base)
    for name, value in additions.items():
        if name not in out:
            out[name] = copy.deepcopy(value)
        elif isinstance(out[name], dict) and isinstance(value, dict):
            out[name] = extend(out[name], value, f"{where}/{name}")
        else:
            raise ValueError(f"{where}/{name}: the seed's value may not be changed")
    return out


_ETAG = {"ETag": ref("headers", "ETag")}
_WRITE = {
    "202": ref("responses", "Accepted"),
    "400": problem("The body is not JSON."),
    "409": problem(
        "Superseded (a newer event for this tag was already applied), or the "
        "Idempotency-Key was used before with another request."
    ),
    "412": problem("A precondition (If-Match, If-None-Match, previous_artifact) does not hold."),
    "413": problem("The body is larger than OCITAG_API_MAX_BODY_BYTES."),
    "415": problem("The body is not application/json."),
    "422": problem("The tag, the body or a header breaks a rule; errors[] names each."),
    **COMMON,
}
_WRITE["400"] = problem(
    "The body is not JSON, or the Authorization header was sent more than once."
)
_WRITE_PARAMETERS = [
    ref("parameters", "IdempotencyKey"),
    ref("parameters", "IfMatch"),
    ref("parameters", "IfNoneMatchWrite"),
]


def _components() -> Doc:
    version_pattern = '^"(0|[1-9][0-9]{0,18})"$'
    return {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token of OCITAG_API_TOKENS; the caller it names is the "
                "`source` of the events this caller's writes become.",
            }
        },
        "parameters": {
            "Tag": {
                "name": "tag",
                "in": "path",
                "required": True,
                "description": "The OCITag ID, e.g. `docker.io/istio/pilot:1.3.0`: "
                "percent-encoded (`docker.io%2Fistio%2Fpilot:1.3.0`), or with its slashes "
                "as path segments (`/ocitags/docker.io/istio/pilot:1.3.0/`).",
                "schema": {
                    "type": "string",
                    "pattern": OCITAG_ID_PATTERN,
                    "examples": ["docker.io/istio/pilot:1.3.0"],
                },
            },
            "IdempotencyKey": {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Becomes the event id. The same key with the same request "
                "gets the same answer; with another request, 409.",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_KEY_CHARS,
                    "pattern": "^[\\x21-\\x7e]+$",
                },
            },
            "IfMatch": {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "description": 'Apply only if the record is at this version ("<version>", '
                "as its ETag); else 412.",
                "schema": {"type": "string", "pattern": version_pattern},
            },
            "IfNoneMatchWrite": {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": "`*`: apply only if the tag does not exist (no live record); "
                "else 412.",
                "schema": {"type": "string", "enum": ["*"]},
            },
            "IfNoneMatchRead": {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": "Entity tags of versions the caller has: 304 if the record "
                "is at one of them.",
                "schema": {"type": "string"},
            },
        },
        "headers": {
            "ETag": {
                "description": 'The record version, "<version>".',
                "required": True,
                "schema": {"type": "string", "pattern": version_pattern},
            },
            "Location": {
                "description": "Where to read the tag once the event is applied.",
                "required": True,
                "schema": {"type": "string"},
            },
            "RetryAfter": {
                "description": "Seconds to wait before retrying.",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            },
            "WWWAuthenticate": {
                "description": "The bearer scheme.",
                "required": True,
                "schema": {"type": "string"},
            },
            "Link": {
                "description": 'The next page, rel="next" (absent on the last page).',
                "required": False,
                "schema": {"type": "string"},
            },
        },
        "responses": {
            "Accepted": {
                "description": "The event is published and will be applied; its outcome "
                "did not arrive within OCITAG_API_TIMEOUT_SECONDS.",
                "headers": {"Location": ref("headers", "Location")},
                "content": {"application/json": {"schema": ref("schemas", "Accepted")}},
            },
            "Unauthorized": problem(
                "No valid bearer token (no detail is given).",
                {"WWW-Authenticate": ref("headers", "WWWAuthenticate")},
            ),
            "Forbidden": problem(
                "Outside the caller's grants (OCITAG_API_GRANTS), decided from the tag pattern "
                "alone before any lookup: it never says whether the tag exists, and nothing "
                "was published."
            ),
            "TooManyRequests": problem(
                "Over the caller's rate limit (OCITAG_API_RATE_LIMIT); nothing was published.",
                {"Retry-After": ref("headers", "RetryAfter")},
            ),
            "Unavailable": problem(
                "Kafka or PostgreSQL is not available.",
                {"Retry-After": ref("headers", "RetryAfter")},
            ),
        },
        "schemas": {
            **copy.deepcopy(seed()["schemas"]),
            "OCITagUpdate": {
                "type": "object",
                "additionalProperties": False,
                "required": ["artifact"],
                "properties": {
                    "artifact": {
                        "type": "string",
                        "pattern": DIGEST_PATTERN,
                        "description": "The digest the tag points at from now on.",
                    },
                    "actor": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_ACTOR_LENGTH,
                        "description": "Who moves the tag; defaults to the caller's source.",
                    },
                    "previous_artifact": {
                        "type": "string",
                        "pattern": DIGEST_PATTERN,
                        "description": "Precondition: the digest the tag points at now.",
                    },
                },
            },
            "Accepted": {
                "type": "object",
                "additionalProperties": False,
                "required": ["status", "source", "id", "location"],
                "properties": {
                    "status": {"const": "accepted"},
                    "source": {"type": "string", "description": "The event's source."},
                    "id": {"type": "string", "description": "The event's id."},
                    "location": {"type": "string"},
                },
            },
            "OCITagPage": {
                "type": "object",
                "additionalProperties": False,
                "required": ["items", "next"],
                "properties": {
                    "items": {"type": "array", "items": _RECORD},
                    "next": {
                        "type": ["string", "null"],
                        "description": "The cursor of the next page; null on the last.",
                    },
                },
            },
        },
    }


def _put() -> Doc:
    return extend(
        seed()["operation"],
        {
            "parameters": _WRITE_PARAMETERS,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("schemas", "OCITagUpdate")}},
            },
            "responses": {"200": {"headers": _ETAG}, **_WRITE},
        },
    )


def _delete() -> Doc:
    return {
        "tags": ["OCI"],
        "summary": "Delete Tag",
        "description": "Publishes an `ocitag.deleted.v1` event; the answer is its outcome: the "
        "record as it was before the deletion, or 404.",
        "operationId": "oci-tag-delete",
        "parameters": _WRITE_PARAMETERS,
        "responses": {
            "200": {
                "description": "Deleted; the record as it was.",
                "headers": _ETAG,
                "content": {"application/json": {"schema": _RECORD}},
            },
            "404": problem("The tag has no live record."),
            **{k: v for k, v in _WRITE.items() if k not in ("400", "413", "415")},
            "400": COMMON["400"],
            "default": problem("Error"),
        },
    }


def _get() -> Doc:
    return {
        "tags": ["OCI"],
        "summary": "Get Tag",
        "description": "The live record of the tag, with its version as ETag; with `at`, the "
        "record as it was at that instant.",
        "operationId": "oci-tag-get",
        "parameters": [ref("parameters", "IfNoneMatchRead"), openapi_history.at_parameter()],
        "responses": {
            "200": {
                "description": "OK",
                "headers": _ETAG,
                "content": {"application/json": {"schema": _RECORD}},
            },
            "304": {
                "description": "Not modified: the record is at that version.",
                "headers": _ETAG,
            },
            "404": problem("The tag has no live record."),
            "422": problem("The tag breaks the identifier rules."),
            **COMMON,
            "default": problem("Error"),
        },
    }


_WATCH = (
    "With `watch=true` (and `Accept: text/event-stream`): a watch, as Server-Sent Events: "
    "first every live record in scope as `event: upsert` (data: the OCITag JSON plus "
    "`version`), then `event: synced`, then each applied change as it happens (`upsert`, "
    'or `delete` with data `{"tag": <OCITag ID>, "version": n}`). Every event has an '
    "`id`; reconnect with `Last-Event-ID` to receive every change after it without the "
    "snapshot, or `event: reset` then a fresh snapshot when the topic no longer holds that "
    "point. A comment line at least every 15 s. `repository` is optional (all "
    "repositories); `limit` and `cursor` do not apply. 429 past the api process's or the "
    "caller's number of watches."
)


def _list() -> Doc:
    return {
        "tags": ["OCI"],
        "summary": "List or Watch Tags",
        "description": "Live records of one repository by tag, paged by an opaque cursor. "
        + _WATCH,
        "operationId": "oci-tag-list",
        "parameters": [
            {
                "name": "repository",
                "in": "query",
                "required": False,
                "description": "Required for a list; a watch without it covers every repository.",
                "schema": {"type": "string", "examples": ["docker.io/istio/pilot"]},
            },
            *openapi_history.paging(),
            {
                "name": "watch",
                "in": "query",
                "required": False,
                "description": "`true`: a watch (Server-Sent Events) instead of a page.",
                "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
            },
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "A watch's resume point: the `id` of the last event received.",
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "200": {
                "description": "OK: a page, or a watch's event stream",
                "headers": {"Link": ref("headers", "Link")},
                "content": {
                    "application/json": {"schema": ref("schemas", "OCITagPage")},
                    "text/event-stream": {
                        "schema": {
                            "type": "string",
                            "description": "Server-Sent Events: `upsert`, `delete`, "
                            "`synced`, `reset`, and comment lines.",
                        }
                    },
                },
            },
            "422": problem("A query parameter breaks a rule; errors[] names each."),
            "429": problem(
                "Too many watches: this api process's OCITAG_API_MAX_WATCHES, or the caller's "
                "OCITAG_API_MAX_WATCHES_PER_CALLER (0: the watch is off).",
                {"Retry-After": ref("headers", "RetryAfter")},
            ),
            **COMMON,
            "default": problem("Error"),
        },
    }


@cache
def document() -> Doc:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ocitag-worker API",
            "version": __version__,
            "description": "The seed's `PUT /ocitags/{tag}/` and its read and delete "
            "companions. Every write is published to Kafka as a tag event and answered with "
            "that event's outcome. HEAD is answered wherever GET is (RFC 9110): the GET's "
            "status and headers, no body; a watch's HEAD opens no stream.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/ocitags/{tag}/": {
                "parameters": [ref("parameters", "Tag")],
                "put": _put(),
                "delete": _delete(),
                "get": _get(),
            },
            "/ocitags/": {"get": _list()},
            **openapi_history.paths(),
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": _with_history(_components()),
    }


def _with_history(components: Doc) -> Doc:
    components["schemas"].update(openapi_history.schemas())
    return components
