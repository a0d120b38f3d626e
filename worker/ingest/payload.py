"""Reading a delivery's JSON with errors that name the place: the small helpers every
mapper shares. Pure.

Hand-written rather than pydantic models: a batch must be read entry by entry, and an
entry that would be ignored anyway (a blob push, a pull) must not fail the delivery
however it is shaped, so each mapper asks only for the fields its decision needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from worker.ingest.mapping import MappingError
from worker.timefmt import parse_rfc3339


def parse_json(body: bytes, location: str = "body") -> Any:
    """The body as JSON, or MappingError saying why not."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MappingError(location, f"is not JSON: {exc}") from None


def as_object(value: Any, location: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise MappingError(location, "must be a JSON object", value)
    return value


def as_list(value: Any, location: str) -> list[Any]:
    if not isinstance(value, list):
        raise MappingError(location, "must be a JSON array", value)
    return value


def optional_str(obj: Mapping[str, Any], key: str, location: str) -> str | None:
    """The member as a string; None when absent, null or empty (Go's zero value)."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MappingError(f"{location}.{key}", "must be a string", value)
    return value


def required_str(obj: Mapping[str, Any], key: str, location: str) -> str:
    value = optional_str(obj, key, location)
    if value is None:
        raise MappingError(f"{location}.{key}", "is required (a non-empty string)")
    return value


def required_time(obj: Mapping[str, Any], key: str, location: str) -> datetime:
    """An RFC 3339 timestamp member, as an aware UTC datetime."""
    text = required_str(obj, key, location)
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise MappingError(f"{location}.{key}", str(exc), text) from None
