"""What a request says, by the API's rules (docs/contract.md "API"). Pure: raises ApiProblem.

Locations in ``errors[]`` name where the caller put the value: ``path.tag``,
``body.artifact``, ``header.if-match``, ``query.limit`` …  The identifier rules are the
core's (``worker.identifiers`` through ``worker.models.TagMovedData``): one home for them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from worker.api.cursors import CursorSeal
from worker.api.problems import ApiProblem, invalid
from worker.headers import repeated, repeated_item
from worker.identifiers import (
    InvalidIdentifierError,
    normalize_ocitag_id,
    normalize_repository,
    split_ocitag_id,
)
from worker.models import MAX_VERSION, TagMovedData, rule_message
from worker.problems import ErrorItem, ProblemKind

API_SOURCE_PREFIX = "urn:ocitag:api:"
PUT_MEMBERS = ("artifact", "actor", "previous_artifact")
MAX_KEY_CHARS = 256
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_ETAG_RE = re.compile(r'"(0|[1-9][0-9]{0,18})"')
_KEY_RE = re.compile(r"[\x21-\x7e]+")  # visible ASCII
_JSON_TYPES = ("application/json", "application/merge-patch+json")


def api_source(caller: str) -> str:
    """The ``source`` of a caller's events: names the API and the caller (never a token)."""
    return API_SOURCE_PREFIX + caller


@dataclass(frozen=True, slots=True)
class Put:
    """A valid PUT: the event's data members besides the tag."""

    artifact: str
    actor: str | None
    previous_artifact: str | None


def ocitag_id(raw: str) -> str:
    """The canonical OCITag ID of the ``{tag}`` path parameter (already percent-decoded)."""
    try:
        return normalize_ocitag_id(raw)
    except InvalidIdentifierError as exc:
        raise invalid(ErrorItem("path.tag", str(exc), raw)) from None


def put_body(raw: bytes, content_type: str | None, ocitag: str) -> Put:
    """``{"artifact", "actor"?, "previous_artifact"?}``: unknown members and every broken
    rule are 422 (all listed); a body that is not JSON is 400."""
    if content_type and content_type.split(";")[0].strip().lower() not in _JSON_TYPES:
        raise ApiProblem(
            ProblemKind.UNSUPPORTED_MEDIA_TYPE,
            f"the body must be application/json, not {content_type[:100]}",
            (ErrorItem("header.content-type", "must be application/json", content_type),),
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiProblem(
            ProblemKind.MALFORMED_REQUEST,
            f"the body is not JSON: {exc}",
            (ErrorItem("body", "must be a JSON object", raw[:200]),),
        ) from None
    if not isinstance(body, dict):
        raise invalid(ErrorItem("body", "must be a JSON object", body))
    items = [
        ErrorItem(f"body.{name}", f"is not a known member (known: {', '.join(PUT_MEMBERS)})", v)
        for name, v in body.items()
        if name not in PUT_MEMBERS
    ]
    repository, tag = split_ocitag_id(ocitag)
    known = {name: v for name, v in body.items() if name in PUT_MEMBERS}
    parsed: TagMovedData | None = None
    try:
        parsed = TagMovedData.model_validate({"repository": repository, "tag": tag, **known})
    except ValidationError as exc:
        items.extend(_items(exc, known))
    if items or parsed is None:
        raise invalid(*items)
    return Put(parsed.artifact, parsed.actor, parsed.previous_artifact)


def _items(exc: ValidationError, body: Mapping[str, Any]) -> list[ErrorItem]:
    out = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else ""
        where = "path.tag" if name in ("repository", "tag") else f"body.{name}"
        value = None if err["type"] == "missing" else body.get(name)
        out.append(ErrorItem(where, rule_message(err), value))
    return out


def expected_version(if_match: str | None, if_none_match: str | None) -> int | None:
    """``If-Match: "<version>"`` → that version; ``If-None-Match: *`` → 0 (must not
    exist); neither → None. Anything else is 422 naming the header."""
    if if_match is not None and if_none_match is not None:
        raise invalid(
            ErrorItem("header.if-none-match", "must not be sent together with If-Match", None)
        )
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise invalid(
                ErrorItem(
                    "header.if-none-match",
                    "only '*' (the tag must not exist) is supported on writes",
                    if_none_match,
                )
            )
        return 0
    if if_match is None:
        return None
    match = _ETAG_RE.fullmatch(if_match.strip())
    if match is None or int(match[1]) > MAX_VERSION:
        raise invalid(
            ErrorItem(
                "header.if-match",
                'must be one strong entity tag, the record version: "<version>" (as ETag)',
                if_match,
            )
        )
    return int(match[1])


def authorization(values: Sequence[str]) -> str | None:
    """The one ``Authorization`` field (every field of the name: aiohttp's ``getall``),
    or None; two of them, or a comma-joined value, are 400 naming the header (never its
    value) and the rule: read as one of them, the request authenticated as whichever
    came first (worker/headers.py)."""
    if repeated(values):
        raise ApiProblem(
            ProblemKind.MALFORMED_REQUEST,
            "the Authorization header must be sent once, with one token",
            (repeated_item("authorization"),),
        )
    return values[0] if values else None


def idempotency_key(raw: str | None) -> str | None:
    """``Idempotency-Key``: becomes the event id; 1-256 visible ASCII characters."""
    if raw is None:
        return None
    if not 0 < len(raw) <= MAX_KEY_CHARS or not _KEY_RE.fullmatch(raw):
        raise invalid(
            ErrorItem(
                "header.idempotency-key",
                f"must be 1 to {MAX_KEY_CHARS} visible ASCII characters",
                raw,
            )
        )
    return raw


def etag_matches(if_none_match: str | None, version: int) -> bool:
    """GET's ``If-None-Match``: does any listed entity tag (weak or strong) or ``*``
    name this version? (RFC 9110 13.1.2: weak comparison.)"""
    if if_none_match is None:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip().removeprefix("W/")
        if tag in ("*", f'"{version}"'):
            return True
    return False


@dataclass(frozen=True, slots=True)
class ListQuery:
    repository: str
    limit: int
    after: str | None  # the last tag of the previous page


def list_query(query: Mapping[str, str], seal: CursorSeal) -> ListQuery:
    """``repository`` (required), ``limit`` (1-1000, default 100), ``cursor`` (opaque),
    ``watch`` false or absent."""
    items: list[ErrorItem] = []
    repository = ""
    raw_repository = query.get("repository")
    if raw_repository is None:
        items.append(ErrorItem("query.repository", "is required", None))
    else:
        try:
            repository = normalize_repository(raw_repository)
        except InvalidIdentifierError as exc:
            items.append(ErrorItem("query.repository", str(exc), raw_repository))
    limit = limit_of(query, items)
    flag_of(query, "watch", items)  # a list is watch=false or no watch; true is a watch
    after = None
    raw_cursor = query.get("cursor")
    if raw_cursor is not None:
        after = decode_cursor(raw_cursor, repository, seal)
        if after is None:
            items.append(
                ErrorItem(
                    "query.cursor",
                    "is not a cursor this API gave for this repository (use `next` as given)",
                    raw_cursor,
                )
            )
    if items:
        raise invalid(*items)
    return ListQuery(repository, limit, after)


def encode_cursor(repository: str, last_tag: str, seal: CursorSeal) -> str:
    """Opaque to callers, and sealed (worker/api/cursors.py: the last tag examined may be
    one the caller may not read): the repository and the page's last tag (keyset
    paging: stable while records come and go)."""
    return seal.seal(orjson.dumps([repository, last_tag]))


def decode_cursor(cursor: str, repository: str, seal: CursorSeal) -> str | None:
    plain = seal.open(cursor)
    if plain is None:
        return None
    try:
        value = orjson.loads(plain)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, list) and len(value) == 2 and value[0] == repository:
        tag = value[1]
        return tag if isinstance(tag, str) else None
    return None


def encode_position(scope: str, *position: str | int) -> str:
    """A keyset cursor: base64url of what it pages (``scope``: a repository, a tag, a
    digest) and the position of the page's last item."""
    raw = orjson.dumps([scope, *position])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_position(
    cursor: str, scope: str, types: tuple[type, ...]
) -> tuple[str | int, ...] | None:
    """The position of a cursor ``encode_position`` gave for ``scope``, its members of
    ``types``; None for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        return None
    if (
        not isinstance(value, list)
        or len(value) != len(types) + 1
        or value[0] != scope
        or not all(
            isinstance(v, t) and not isinstance(v, bool)
            for v, t in zip(value[1:], types, strict=True)
        )
    ):
        return None
    return tuple(value[1:])


def limit_of(query: Mapping[str, str], items: list[ErrorItem]) -> int:
    """``limit`` (1-1000, default 100); a bad one is added to ``items``."""
    raw_limit = query.get("limit")
    if raw_limit is None:
        return DEFAULT_LIMIT
    if raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_LIMIT:
        return int(raw_limit)
    items.append(ErrorItem("query.limit", f"must be an integer from 1 to {MAX_LIMIT}", raw_limit))
    return DEFAULT_LIMIT


def flag_of(query: Mapping[str, str], name: str, items: list[ErrorItem]) -> bool:
    """A ``true``/``false`` parameter (default false); any other spelling (``1``, ``yes``)
    is added to ``items`` rather than read as false: ``watch=1`` answered with a page
    would look like a watch that never sends anything."""
    raw = query.get(name, "false")
    if raw not in ("true", "false"):
        items.append(ErrorItem(f"query.{name}", "must be true or false", raw))
    return raw == "true"


def watch_query(query: Mapping[str, str]) -> str | None:
    """A watch's query (``watch=true``): ``repository`` (optional: every repository);
    ``limit`` and ``cursor`` are a list's, not a watch's."""
    items: list[ErrorItem] = []
    repository = None
    raw_repository = query.get("repository")
    if raw_repository is not None:
        try:
            repository = normalize_repository(raw_repository)
        except InvalidIdentifierError as exc:
            items.append(ErrorItem("query.repository", str(exc), raw_repository))
    for name in ("limit", "cursor"):
        if name in query:
            rule = "is not a watch's (a watch sends every record)"
            items.append(ErrorItem(f"query.{name}", rule, query[name]))
    if items:
        raise invalid(*items)
    return repository
