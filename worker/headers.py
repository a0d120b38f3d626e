"""Single-valued header fields (RFC 9110 5.5): a credential header sent twice is refused
rather than read as one of them. Pure.

aiohttp keeps every field of a name (``request.headers.getall``) and its ``get`` returns
the first: a request with two ``Authorization`` fields authenticated as the first, and
ingest's lower-cased copy of the headers kept the last. The api also refuses one value
with values joined by commas (what an intermediary may make of two, RFC 9110 5.3): its
bearer tokens come from a comma-separated setting, so a comma can only be a join.
Ingest does not: a named receiver's secret may hold a comma, and ingest compares a
proof's whole value, so a joined value proves nothing it should not."""

from __future__ import annotations

from collections.abc import Sequence

from worker.problems import ErrorItem

#: the rule a repeated field breaks, as an error item says it
SINGLE_VALUED = (
    "must be sent once, holding one value (RFC 9110: a single-valued field; "
    "a comma joins repeated ones)"
)
#: the same for ingest, which refuses only a field sent twice (``sent_twice``)
SENT_ONCE = "must be sent once (RFC 9110: a single-valued field)"


def repeated(values: Sequence[str]) -> bool:
    """The field was sent more than once, or once with values joined by commas (the
    api's bearer tokens: a token has no comma, so a comma can only be a join)."""
    return sent_twice(values) or any("," in value for value in values)


def sent_twice(values: Sequence[str]) -> bool:
    """The field was sent more than once. Ingest's rule: it compares a proof header's
    whole value with its secrets, so a comma-joined value proves nothing unless it is a
    configured secret, and a named receiver's secret may hold a comma."""
    return len(values) > 1


def repeated_item(name: str, rule: str = SINGLE_VALUED) -> ErrorItem:
    """The error naming the field (``header.authorization``); never its value: it is a
    credential."""
    return ErrorItem(f"header.{name.lower()}", rule, None)
