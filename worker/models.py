"""The contract as pydantic v2 models: input event, its data, the outcomes and the seed's
``OCITag`` and ``ErrorModel`` records. ``schemas/`` is generated from these (make schemas).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.config import JsonDict, JsonValue
from pydantic_core import ErrorDetails

from worker import identifiers
from worker.identifiers import (
    TAG_PATTERN,
    anchored,
    normalize_digest,
    normalize_repository,
    validate_tag,
)
from worker.timefmt import parse_rfc3339

#: The content type of a structured-mode CloudEvent, on input events and outcomes alike.
STRUCTURED = "application/cloudevents+json"
EVENT_TYPE = "ocitag.moved.v1"
DELETED_EVENT_TYPE = "ocitag.deleted.v1"
UPDATED_TYPE = "ocitag.updated.v1"
REMOVED_TYPE = "ocitag.removed.v1"
REJECTED_TYPE = "ocitag.rejected.v1"
EVENT_TYPES = (EVENT_TYPE, DELETED_EVENT_TYPE)
MAX_ID_LENGTH = 256
MAX_SOURCE_LENGTH = 2_048
MAX_ACTOR_LENGTH = 256
MAX_VERSION = 2**63 - 1
DIGEST_PATTERN = anchored(identifiers.DIGEST_PATTERN)

# RFC 3986 URI-reference: only these characters, '%' only as %HH, a scheme if any is
# ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_URI_REF_RE = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?#\[\]]|%[0-9A-Fa-f]{2})+"
)


@lru_cache(maxsize=4_096)  # a fleet's events come from a few sources, again and again
def uri_reference(value: str) -> bool:
    """The source rule: an RFC 3986 URI-reference."""
    return _URI_REF_RE.fullmatch(value) is not None


#: the key under which ``EventAttributes`` leaves the parsed ``time`` in a validation
#: context given as a dict (worker/decode.py: parsed once, where it is validated)
PARSED_TIME = "time"


def clean_text(value: str) -> bool:
    """What ``_no_nul`` accepts, as a test (worker/fastdecode.py)."""
    return "\x00" not in value and (value.isascii() or _SURROGATE_RE.search(value) is None)


def _no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and lone surrogates are not Unicode text."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    if _SURROGATE_RE.search(value):
        raise ValueError("must be valid Unicode (it contains a lone surrogate escape)")
    return value


# What a broken rule says, in the project's words: a problem detail or an API 422 lists
# them after the member's location ("body.data.actor must not be empty"), a bad setting
# after its name. pydantic's own messages ("Input should be …", "String should have …")
# are written for Python programmers and read oddly there, so every error type these
# models and the settings raise has its words here; the validators raise ValueError in
# the project's words already.
_RULE_WORDS: dict[str, Callable[[Any], str]] = {
    "missing": lambda _: "is required",
    "extra_forbidden": lambda _: "is not a known member",
    "string_type": lambda _: "must be a string",
    "int_type": lambda _: "must be an integer",
    "int_parsing": lambda _: "must be an integer",
    "float_parsing": lambda _: "must be a number",
    "bool_parsing": lambda _: "must be true or false",
    "literal_error": lambda ctx: f"must be {ctx['expected']}",
    "string_pattern_mismatch": lambda ctx: f"must match {ctx['pattern']}",
    "string_too_short": lambda ctx: (
        "must not be empty"
        if ctx["min_length"] == 1
        else f"must be at least {ctx['min_length']} characters"
    ),
    "string_too_long": lambda ctx: f"must be at most {ctx['max_length']} characters",
    "greater_than_equal": lambda ctx: f"must be {_number(ctx['ge'])} or more",
    "greater_than": lambda ctx: f"must be more than {_number(ctx['gt'])}",
    "less_than_equal": lambda ctx: f"must be {_number(ctx['le'])} or less",
}


def _number(bound: float) -> str:
    """A bound as written: 0 for a float bound of 0.0, integers in full."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def rule_message(error: ErrorDetails) -> str:
    """The project's words for one pydantic validation error (the location is the
    caller's). A ValueError from a validator is already in them; an error type no model
    here raises is named by its type, never by pydantic's sentence."""
    words = _RULE_WORDS.get(error["type"])
    if words is not None:
        return words(error.get("ctx", {}))
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return f"breaks the rule {error['type']}"


# The members of tag event data, each rule in one place (both data models use them).
# The patterns are for the published schema only: validation runs the identifier
# functions, which say in words which rule broke.
Repository = Annotated[
    str,
    AfterValidator(normalize_repository),
    Field(
        description="OCIRepository ID; normalised like `docker pull` "
        "(no host → docker.io, official images → docker.io/library/…)",
        examples=["docker.io/istio/pilot", "localhost:5000/team/app"],
    ),
]
Tag = Annotated[
    str,
    AfterValidator(validate_tag),
    Field(
        description=f"Tag: {TAG_PATTERN}",
        examples=["1.3.0"],
        json_schema_extra={"pattern": anchored(TAG_PATTERN)},
    ),
]
Digest = Annotated[
    str, AfterValidator(normalize_digest), Field(json_schema_extra={"pattern": DIGEST_PATTERN})
]
Actor = Annotated[str, Field(min_length=1, max_length=MAX_ACTOR_LENGTH), AfterValidator(_no_nul)]
ExpectedVersion = Annotated[int, Field(ge=0, le=MAX_VERSION)]


class TagMovedData(BaseModel):
    """``data`` of a tag-moved event. Unknown members are rejected. Validation
    normalises: the model holds the canonical repository and digests."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    repository: Repository
    tag: Tag
    artifact: Digest = Field(
        description="Digest the tag now points at: sha256:<64 hex>, sha512:<128 hex>, or "
        "bare 64 hex (sha256)",
        examples=["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
    )
    actor: Actor | None = Field(
        None, description="User who moved the tag; defaults to the event source"
    )
    previous_artifact: Digest | None = Field(
        None, description="Precondition: the digest the tag must point at now"
    )
    expected_version: ExpectedVersion | None = Field(
        None,
        description="Precondition: the record version the tag must have now (0 = must not exist)",
    )

    @property
    def ocitag_id(self) -> str:
        return f"{self.repository}:{self.tag}"


class TagDeletedData(BaseModel):
    """``data`` of a tag-deleted event: a move's data without ``artifact``. Unknown
    members (``artifact`` among them) are rejected."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    repository: Repository
    tag: Tag
    actor: Actor | None = Field(
        None, description="User who deleted the tag; defaults to the event source"
    )
    previous_artifact: Digest | None = Field(
        None, description="Precondition: the digest the tag must point at now"
    )
    expected_version: ExpectedVersion | None = Field(
        None,
        description="Precondition: the record version the tag must have now (a deleted or "
        "never-seen tag is at 0)",
    )

    @property
    def ocitag_id(self) -> str:
        return f"{self.repository}:{self.tag}"


class EventAttributes(BaseModel):
    """The CloudEvents 1.0 context attributes of a tag event (both content modes).
    Extension attributes are allowed and ignored."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    specversion: Literal["1.0"] = Field(description="CloudEvents version, exactly '1.0'")
    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="Event id")
    source: str = Field(
        min_length=1,
        max_length=MAX_SOURCE_LENGTH,
        description="URI-reference naming the producer",
        examples=["https://registry.example.com/webhook"],
        json_schema_extra={"format": "uri-reference"},
    )
    type: str = Field(description=f"Event type: '{EVENT_TYPE}' or '{DELETED_EVENT_TYPE}'")
    time: str = Field(
        description="RFC 3339 timestamp; orders events (microsecond precision)",
        examples=["2026-11-28T15:12:02.123456Z"],
        json_schema_extra={"format": "date-time"},
    )
    subject: str | None = Field(None, description="Optional; if present, the OCITag ID of data")
    datacontenttype: str | None = Field(None, description="application/json if present")

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str | None) -> str | None:
        return None if value is None else _no_nul(value)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _no_nul(value)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not uri_reference(value):
            raise ValueError(
                "must be a URI-reference (RFC 3986): no spaces, control characters or bare '%'"
            )
        return value

    @field_validator("time")
    @classmethod
    def _time(cls, value: str, info: ValidationInfo) -> str:
        moment = parse_rfc3339(value)
        if isinstance(info.context, dict):
            info.context[PARSED_TIME] = moment
        return value

    @field_validator("datacontenttype")
    @classmethod
    def _datacontenttype(cls, value: str | None) -> str | None:
        if value is not None and value.split(";")[0].strip().lower() != "application/json":
            raise ValueError("must be application/json")
        return value


class TagMovedEvent(EventAttributes):
    """A tag-moved event in structured content mode (the whole record value)."""

    type: Literal["ocitag.moved.v1"] = Field(description=f"Exactly '{EVENT_TYPE}'")
    data: TagMovedData


class TagDeletedEvent(EventAttributes):
    """A tag-deleted event in structured content mode (the whole record value)."""

    type: Literal["ocitag.deleted.v1"] = Field(description=f"Exactly '{DELETED_EVENT_TYPE}'")
    data: TagDeletedData


# ---- the seed's records (schemas/seed/ocitag-api.yaml): same members, same required list.
# schemas/ocitag.schema.json and schemas/error-model.schema.json are generated from these
# and must keep the seed's JSON Schema (tests/unit/test_schemas.py): members that may be
# left out are never null there (``_omittable``), ``errors`` is ``type: [array, null]``.

SCHEMA_BASE_URI = "https://ocitag-worker.dev/schemas/"


def _omittable(schema: JsonDict) -> None:
    """The seed's form of an ``X | None = None`` member: it may be left out, it is never
    null. Drops pydantic's ``null`` branch and ``null`` default."""
    branches = schema.pop("anyOf", None)
    if isinstance(branches, list):
        (branch,) = (b for b in branches if b != {"type": "null"})
        assert isinstance(branch, dict)
        schema.update(branch)
    if schema.get("default", ...) is None:
        del schema["default"]


def _omittable_with(**extra: JsonValue) -> Callable[[JsonDict], None]:
    """``_omittable``, then these keywords (format, readOnly…)."""

    def update(schema: JsonDict) -> None:
        _omittable(schema)
        schema.update(extra)

    return update


def _nullable(schema: JsonDict) -> None:
    """The seed's form of a nullable member: ``type: [X, "null"]`` instead of ``anyOf``,
    no ``null`` default."""
    _omittable(schema)
    schema["type"] = [schema["type"], "null"]


def _outcome_formats(schema: JsonDict) -> None:
    """Formats of the outcome envelope's attributes (declared on _OutcomeBase)."""
    properties = schema["properties"]
    assert isinstance(properties, dict)
    for name, fmt in (("id", "uuid"), ("source", "uri"), ("time", "date-time")):
        member = properties[name]
        assert isinstance(member, dict)
        member["format"] = fmt


class OCITag(BaseModel):
    """The seed's OCITag: the record a tag-moved event produces."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: str | None = Field(
        None,
        alias="$schema",
        description="A URL to the JSON Schema for this object.",
        examples=[f"{SCHEMA_BASE_URI}ocitag.schema.json"],
        json_schema_extra=_omittable_with(format="uri", readOnly=True),
    )
    artifact: str = Field(
        description="Artifact is the ID (the digest) of the OCIArtifact this OCITag "
        "*currently* points to: 64 lowercase hex for sha256, sha512:<128 hex> for sha512.",
        examples=["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
    )
    repository: str = Field(
        description="URL-like ID of the OCIRepository this OCITag is published under "
        "(normalised like `docker pull`).",
        examples=["docker.io/istio/pilot"],
    )
    tag: str = Field(description="Tag is the tag portion of the OCITag.", examples=["1.3.0"])
    created_by: str = Field(description="user who created the record.")
    created_on: str = Field(
        description="timestamp of when the record was created.",
        json_schema_extra={"format": "date-time"},
    )
    last_modified_by: str = Field(description="user who last modified the record.")
    last_modified_on: str = Field(
        description="timestamp of when the record was last modified.",
        json_schema_extra={"format": "date-time"},
    )


class StateRecord(OCITag):
    """A live record on the state topic (docs/subscribers.md): the OCITag plus its
    version. A deleted tag's record there is a tombstone (a null value)."""

    version: int = Field(
        ge=1,
        description="The record's version: 1 on creation, one more for every applied change "
        "(it counts on across a deletion); per tag it only grows along the topic.",
        examples=[3],
    )


class ErrorDetail(BaseModel):
    """The seed's ErrorDetail: one broken rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    location: str | None = Field(
        None,
        description="Where the error occurred, e.g. 'body.data.artifact' or "
        "'headers.ce_time' (docs/problems.md)",
        json_schema_extra=_omittable,
    )
    message: str | None = Field(
        None, description="Error message text", json_schema_extra=_omittable
    )
    value: Any = Field(
        None, description="The value at the given location", json_schema_extra=_omittable
    )


class ErrorModel(BaseModel):
    """The seed's ErrorModel (RFC 9457 problem details)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: str | None = Field(
        None,
        alias="$schema",
        description="A URL to the JSON Schema for this object.",
        examples=[f"{SCHEMA_BASE_URI}error-model.schema.json"],
        json_schema_extra=_omittable_with(format="uri", readOnly=True),
    )
    type: str = Field(
        "about:blank",
        description="A URI reference to human-readable documentation for the error "
        "(docs/problems.md).",
        examples=["https://ocitag-worker.dev/problems/invalid-data"],
        json_schema_extra={"format": "uri"},
    )
    title: str | None = Field(
        None,
        description="A short, human-readable summary of the problem type. This value should "
        "not change between occurrences of the error.",
        examples=["Invalid tag-moved data"],
        json_schema_extra=_omittable,
    )
    status: int | None = Field(
        None,
        description="HTTP status code",
        examples=[422],
        json_schema_extra=_omittable_with(format="int64"),
    )
    detail: str | None = Field(
        None,
        description="A human-readable explanation specific to this occurrence of the problem.",
        examples=["the tag-moved data breaks 1 rule: body.data.tag is required"],
        json_schema_extra=_omittable,
    )
    instance: str | None = Field(
        None,
        description="A URI reference that identifies the specific occurrence of the problem: "
        "the input record, urn:kafka:<topic>:<partition>:<offset>.",
        examples=["urn:kafka:ocitag.events:3:1234"],
        json_schema_extra=_omittable_with(format="uri"),
    )
    errors: list[ErrorDetail] | None = Field(
        None, description="Optional list of individual error details", json_schema_extra=_nullable
    )


class _OutcomeBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"]
    id: str = Field(description="Derived from the input's (source, id, content)")
    source: str = Field(description="Names the worker (OCITAG_WORKER_SOURCE)")
    time: str = Field(description="When the input was first processed (RFC 3339)")
    # An attribute with no value is left out, never null: CloudEvents SDKs reject null.
    subject: str | None = Field(
        None,
        description="The canonical OCITag ID; left out when the input names no valid one",
        json_schema_extra=_omittable,
    )
    status: int = Field(description="HTTP-style status code of the outcome")
    causationid: str | None = Field(
        None,
        description="The input's id; left out when the input was not read that far (400)",
        json_schema_extra=_omittable,
    )
    causationsource: str | None = Field(
        None,
        description="The input's source; left out when the input was not read that far (400)",
        json_schema_extra=_omittable,
    )


class UpdatedOutcome(_OutcomeBase):
    """Outcome of an applied (or already applied) event: status 200."""

    model_config = ConfigDict(json_schema_extra=_outcome_formats)

    type: Literal["ocitag.updated.v1"]
    datacontenttype: Literal["application/json"]
    status: Literal[200]
    resourceversion: int = Field(ge=1, description="Record version after this event")
    change: Literal["created", "updated", "unchanged"]
    repointed: Literal[True] | None = Field(
        None,
        description="Present (true) when a release tag (OCITAG_IMMUTABLE_TAGS) moved from "
        "one artifact to another, also across a deletion; left out otherwise",
        json_schema_extra=_omittable,
    )
    subject: str
    causationid: str
    causationsource: str
    data: OCITag


class RemovedOutcome(_OutcomeBase):
    """Outcome of an applied (or already applied) deletion: status 200."""

    model_config = ConfigDict(json_schema_extra=_outcome_formats)

    type: Literal["ocitag.removed.v1"]
    datacontenttype: Literal["application/json"]
    status: Literal[200]
    resourceversion: int = Field(ge=1, description="Record (tombstone) version after this event")
    change: Literal["deleted"]
    subject: str
    causationid: str
    causationsource: str
    data: OCITag = Field(description="The record as it was just before the deletion")


class RejectedOutcome(_OutcomeBase):
    """Outcome of a rejected event: status 400, 404, 409, 412, 422 or 500."""

    model_config = ConfigDict(json_schema_extra=_outcome_formats)

    id: str = Field(
        description="Derived from the input's (source, id, content) when the outcome is "
        "stored (404, 412, 422, a superseded 409); from the input record (topic, partition, "
        "offset, bytes) and the problem type when it is not (400, an id-reused 409, 500)"
    )
    type: Literal["ocitag.rejected.v1"]
    datacontenttype: Literal["application/problem+json"]
    status: Literal[400, 404, 409, 412, 422, 500]
    data: ErrorModel
