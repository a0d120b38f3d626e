"""Turning one registry entry into a :class:`TagChange`: the identifier checks, hosts,
times and ids that the kind mappers share. Pure.

Every mapper decides first whether an entry is a tag change at all (pulls, blobs, scans,
untagged pushes… are :class:`Ignored` however they are shaped) and only then builds the
event here, so that an entry which would be ignored anyway never fails a delivery while
a tag change with a broken repository, tag or digest does (400 naming the field).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from worker.identifiers import (
    InvalidIdentifierError,
    normalize_digest,
    normalize_repository,
    validate_tag,
)
from worker.ingest.mapping import RECEIVED_AT_HEADER, MappingError, TagChange, ingest_source
from worker.timefmt import parse_rfc3339


def tag_event(
    action: Literal["moved", "deleted"],
    *,
    kind: str,
    repository: str,
    tag: str,
    digest: str | None,
    event_id: str,
    time: datetime,
    actor: str | None,
    at: Mapping[str, str],
) -> TagChange:
    """A checked event. ``repository`` carries the registry host; it is normalised as the
    Identifiers rules say. ``at`` names where ``repository``, ``tag`` and ``digest`` were
    read, for the MappingError of a value that breaks a rule."""
    try:
        canonical = normalize_repository(repository)
    except InvalidIdentifierError as exc:
        raise MappingError(at["repository"], str(exc), repository) from None
    try:
        validate_tag(tag)
    except InvalidIdentifierError as exc:
        raise MappingError(at["tag"], str(exc), tag) from None
    if action == "moved" and digest is not None:
        digest = checked_digest(digest, at["digest"])
    return TagChange(
        action=action,
        repository=canonical,
        tag=tag,
        digest=digest if action == "moved" else None,
        event_id=event_id,
        time=time,
        source=ingest_source(kind, canonical.split("/", 1)[0]),
        actor=actor,
    )


def checked_digest(raw: str, location: str) -> str:
    """``sha256:<hex>`` (or ``sha512:<hex>``) from a digest that keeps the Identifiers
    rules; a bare 64-hex string is read as sha256."""
    try:
        canonical = normalize_digest(raw)
    except InvalidIdentifierError as exc:
        raise MappingError(location, str(exc), raw) from None
    return canonical if canonical.startswith("sha512:") else f"sha256:{canonical}"


def url_host(raw: str, location: str) -> str:
    """The ``host[:port]`` of ``https://host[:port]/path`` or of a bare ``host[:port]/path``."""
    text = raw.strip()
    parts = urlsplit(text if "://" in text else f"//{text}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise MappingError(location, "has no valid host[:port]", raw) from None
    host = parts.netloc.rpartition("@")[2]
    if not host:
        raise MappingError(location, "has no host", raw)
    return host.lower()


def epoch_time(obj: Mapping[str, Any], key: str, location: str) -> datetime:
    """A Unix-time member (seconds, integer or fractional) as an aware UTC datetime."""
    value = obj.get(key)
    where = f"{location}.{key}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MappingError(where, "is required (Unix time in seconds)", value)
    try:
        moment = datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise MappingError(where, "is not a representable Unix time", value) from None
    if value <= 0:
        raise MappingError(where, "must be after 1970-01-01", value)
    return moment


def received_time(headers: Mapping[str, str]) -> datetime:
    """The arrival time the server stamps on every delivery (for payloads without one)."""
    text = headers.get(RECEIVED_AT_HEADER)
    where = f"headers.{RECEIVED_AT_HEADER}"
    if not text:
        raise MappingError(where, "is required: the server stamps each delivery's arrival")
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise MappingError(where, str(exc), text) from None


def entry_id(base: str, index: int, count: int) -> str:
    """The id of entry ``index`` of a delivery whose one id covers ``count`` entries:
    the delivery's own id when it has a single entry, else ``<id>#<index>``."""
    return base if count == 1 else f"{base}#{index}"


def member_object(obj: Mapping[str, Any], key: str, location: str) -> Mapping[str, Any]:
    """An optional object member: ``{}`` when absent or null, else it must be an object."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MappingError(f"{location}.{key}", "must be a JSON object", value)
    return value


def member_list(obj: Mapping[str, Any], key: str, location: str) -> list[Any]:
    """An optional array member: ``[]`` when absent or null, else it must be an array."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MappingError(f"{location}.{key}", "must be a JSON array", value)
    return value
