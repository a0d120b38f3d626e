"""Single-valued header fields (RFC 9110 5.5): a credential header sent twice, or once
with values joined by commas (what an intermediary may make of two, RFC 9110 5.3), is
refused rather than read as one of them. Pure.

aiohttp keeps every field of a name (``request.headers.getall``) and its ``get`` returns
the first: a request with two ``Authorization`` fields authenticated as the first, and
ingest's lower-cased copy of the headers kept the last. No credential the product takes
has a comma in it (the tokens and secrets of its settings are comma-separated lists, a
bearer token's or a JWT's alphabet has none, a signature is hex), so a comma can only
be a join."""

from __future__ import annotations

from collections.abc import Sequence

from worker.problems import ErrorItem

#: the rule a repeated field breaks, as an error item says it
SINGLE_VALUED = (
    "must be sent once, holding one value (RFC 9110: a single-valued field; "
    "a comma joins repeated ones)"
)


def repeated(values: Sequence[str]) -> bool:
    """The field was sent more than once, or once with values joined by commas."""
    return len(values) > 1 or any("," in value for value in values)


def repeated_item(name: str) -> ErrorItem:
    """The error naming the field (``header.authorization``); never its value: it is a
    credential."""
    return ErrorItem(f"header.{name.lower()}", SINGLE_VALUED, None)
