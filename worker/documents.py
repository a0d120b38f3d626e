"""JSON documents given as one setting (``OCITAG_API_GRANTS``, ``OCITAG_INGEST_RECEIVERS``):
parsing them and naming a place inside them. Pure.

A broken document stops start-up with a message naming the place as a JSONPath
(``$["ci-team-a"][0].actions[1]``): object members that are identifiers are written with
a dot, anything else (a caller name with '-' or '.') in brackets, quoted.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DocumentError(ValueError):
    """A setting's JSON document breaks a rule; the message starts with the place."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


def child(where: str, key: str | int) -> str:
    """The JSONPath of a member (``key`` str) or an item (``key`` int) of ``where``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{where}.{key}"
    return f"{where}[{orjson.dumps(key).decode()}]"


def parse(raw: str) -> Any:
    """The JSON value of a document; DocumentError at ``$`` when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DocumentError("$", f"not a JSON document ({exc.msg}, character {exc.pos})") from None


def expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    """``value`` when it is a ``kind`` (a bool is never an int here), else DocumentError."""
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    raise DocumentError(where, f"must be {what}")


def members(value: dict[str, Any], where: str, required: set[str], optional: set[str]) -> None:
    """The members of an object are exactly the known ones, the required all there."""
    for key in value:
        if key not in required | optional:
            known = ", ".join(sorted(required | optional))
            raise DocumentError(child(where, key), f"unknown member (known: {known})")
    for key in sorted(required - value.keys()):
        raise DocumentError(child(where, key), "is required")
