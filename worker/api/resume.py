"""Watch event ids: where in the state topic a watcher stood after an event. Pure.

An id is opaque to clients; inside it is the next offset to read of every partition of
the state topic (``w1.`` + base64url of the offsets, comma-separated), so any api process
(a restarted one, another replica) resumes a ``Last-Event-ID`` from the topic itself,
not from its own memory. Events of a snapshot carry ``s1.`` ids: a snapshot cut short
cannot be continued (the client holds part of it; the rest has moved on), so resuming
one starts over with ``reset`` and a fresh snapshot.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

LIVE_PREFIX = "w1."
SNAPSHOT_PREFIX = "s1."
#: a longer Last-Event-ID is not one of ours (10,000 partitions of 19 digits fit)
MAX_ID_CHARS = 300_000
_MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Resume:
    """A decoded id: per partition (index) the next offset to read."""

    positions: tuple[int, ...]
    snapshot: bool


def encode(positions: tuple[int, ...], *, snapshot: bool = False) -> str:
    text = ",".join(map(str, positions)).encode()
    body = base64.urlsafe_b64encode(text).rstrip(b"=").decode()
    return (SNAPSHOT_PREFIX if snapshot else LIVE_PREFIX) + body


def decode(text: str | None) -> Resume | None:
    """The id's positions, or None when it is not an id this api gave (then the watch
    starts over with ``reset``)."""
    if not text or len(text) > MAX_ID_CHARS:
        return None
    prefix, body = text[:3], text[3:]
    if prefix not in (LIVE_PREFIX, SNAPSHOT_PREFIX) or not body:
        return None
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        return None
    parts = raw.split(",")
    canonical = encode_body(raw) == body  # one spelling per id: no padding, no stray bits
    if not canonical or not all(_is_offset(p) for p in parts):
        return None
    return Resume(tuple(int(p) for p in parts), prefix == SNAPSHOT_PREFIX)


def _is_offset(text: str) -> bool:
    """A decimal offset as ``str(int)`` writes it, within Kafka's range."""
    plain = text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")
    return plain and len(text) <= 19 and int(text) <= _MAX_OFFSET


def encode_body(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()
