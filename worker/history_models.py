"""The history answers' shapes (docs/history.md), as pydantic models: the source of
schemas/history-page.schema.json and schemas/artifact-tags-page.schema.json
(worker/schemas.py) and of the api's OpenAPI components (worker/api/openapi.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.models import DIGEST_PATTERN


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HistoryEvent(_Strict):
    source: str = Field(description="The applied event's source")
    id: str = Field(description="The applied event's id")


class HistoryEntry(_Strict):
    """One applied change of a tag: one 200 outcome (or the start of history)."""

    version: int = Field(ge=0, description="The record's version after the change")
    change: Literal["baseline", "created", "updated", "unchanged", "deleted"] = Field(
        description="As the outcome's `change`; `baseline`: the record as it was when "
        "history began (the upgrade to a version with history)"
    )
    artifact: str = Field(
        pattern=DIGEST_PATTERN,
        description="The artifact the tag points at after the change; for a deletion, the "
        "one it pointed at until then",
    )
    by: str = Field(description="last_modified_by after a move; deleted_by of a deletion")
    at: str = Field(
        description="The event's time (RFC 3339)", json_schema_extra={"format": "date-time"}
    )
    recorded_at: str = Field(
        description="When the worker applied it (RFC 3339)",
        json_schema_extra={"format": "date-time"},
    )
    event: HistoryEvent
    repointed: bool = Field(
        description="A release tag (OCITAG_IMMUTABLE_TAGS) moved from one artifact to "
        "another, also across a deletion"
    )


class HistoryPage(_Strict):
    """``GET /ocitags/{tag}/history``: entries, newest version first."""

    items: list[HistoryEntry]
    next: str | None = Field(description="The cursor of the next page; null on the last")


class TagInterval(_Strict):
    """A span in which a tag pointed at the digest asked about."""

    tag: str = Field(description="The OCITag ID")
    from_: str = Field(
        alias="from",
        description="`at` of the change that made the tag point at the digest",
        json_schema_extra={"format": "date-time"},
    )
    until: str | None = Field(
        description="`at` of the change that moved or deleted it; null while it still does",
        json_schema_extra={"format": "date-time"},
    )
    from_version: int = Field(ge=0, description="The version of that change")


class TagIntervalPage(_Strict):
    """``GET /artifacts/{digest}/tags``."""

    items: list[TagInterval]
    next: str | None = Field(description="The cursor of the next page; null on the last")
