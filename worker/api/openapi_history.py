"""The history operations of the OpenAPI document (worker/api/openapi.py), and their
schemas from the same pydantic models as schemas/history-page.schema.json and
schemas/artifact-tags-page.schema.json. Pure."""

from __future__ import annotations

from pydantic import BaseModel

from worker.api.openapi_parts import COMMON, Doc, problem
from worker.api.requests import MAX_LIMIT
from worker.history_models import HistoryPage, TagIntervalPage
from worker.models import DIGEST_PATTERN

_REF = "#/components/schemas/{model}"


def _common() -> Doc:
    return {
        **COMMON,
        "422": problem("A parameter breaks a rule; errors[] names each."),
        "default": problem("Error"),
    }


def paging() -> list[Doc]:
    """``limit`` and ``cursor``: every paged operation's (the list's too)."""
    return [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
        },
        {
            "name": "cursor",
            "in": "query",
            "required": False,
            "description": "`next` of the previous page, as given.",
            "schema": {"type": "string"},
        },
    ]


def _page(model: type[BaseModel]) -> Doc:
    return {
        "description": "OK",
        "headers": {"Link": {"$ref": "#/components/headers/Link"}},
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}},
    }


def schemas() -> Doc:
    """The page models and the models they use, as components."""
    found: Doc = {}
    for model in (HistoryPage, TagIntervalPage):
        schema = model.model_json_schema(mode="serialization", ref_template=_REF)
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


def at_parameter() -> Doc:
    """``?at=`` of ``GET /ocitags/{tag}/``."""
    return {
        "name": "at",
        "in": "query",
        "required": False,
        "description": "An RFC 3339 instant: the record as it was then (the latest change at "
        "or before it, unless that was a deletion); 404 when the tag did not exist then.",
        "schema": {"type": "string", "format": "date-time"},
    }


def paths() -> Doc:
    return {
        "/ocitags/{tag}/history": {
            "parameters": [{"$ref": "#/components/parameters/Tag"}],
            "get": {
                "tags": ["OCI"],
                "summary": "Tag History",
                "description": "Every applied change of the tag (one per 200 outcome), "
                "newest version first, paged by an opaque cursor.",
                "operationId": "oci-tag-history",
                "parameters": paging(),
                "responses": {
                    "200": _page(HistoryPage),
                    "404": problem("The tag was never seen (it has no history)."),
                    **_common(),
                },
            },
        },
        "/artifacts/{digest}/tags": {
            "get": {
                "tags": ["OCI"],
                "summary": "Tags of an Artifact",
                "description": "The tags that point at the digest now (history=false), or "
                "every span in which one did (history=true), sorted by tag; only tags the "
                "caller may read.",
                "operationId": "artifact-tags",
                "parameters": [
                    {
                        "name": "digest",
                        "in": "path",
                        "required": True,
                        "description": "sha256:<hex>, <hex> (sha256) or sha512:<hex>.",
                        "schema": {"type": "string", "pattern": DIGEST_PATTERN},
                    },
                    {
                        "name": "history",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean", "default": False},
                    },
                    *paging(),
                ],
                "responses": {"200": _page(TagIntervalPage), **_common()},
            }
        },
    }
