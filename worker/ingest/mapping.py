"""The types every registry-kind mapper returns, and the identity helpers they share.

Pure: no I/O. A mapper (``worker/ingest/<kind>.py``) exposes
``map_delivery(body: bytes, headers: Mapping[str, str]) -> list[Mapped]`` (header names
lower-case) and raises :class:`MappingError` for a body it cannot map.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

#: headers the server adds to what a mapper sees: the registry host named by
#: ``?registry=<host>`` on the webhook URL, or by the sender's own header of this name
#: (where a payload has none, or only an internal one) …
REGISTRY_HEADER = "x-ocitag-registry"
#: … and when the delivery arrived (RFC 3339; always the server's), the time of events
#: from payloads that carry no timestamp of their own (for those kinds, the first arrival
#: of the same body: worker/ingest/arrivals.py)
RECEIVED_AT_HEADER = "x-ocitag-received-at"


@dataclass(frozen=True, slots=True)
class TagChange:
    """One tag move or delete read from a delivery: what ingest builds an input event
    from (the worker's decoded event is ``worker.events.TagEvent``)."""

    action: Literal["moved", "deleted"]
    repository: str  # with the registry host, e.g. "ghcr.io/org/app" (normalised before publishing)
    tag: str
    digest: str | None  # None only for a move whose payload lacks it (resolved by HEAD)
    event_id: str  # from the delivery (see "Identity" in the contract)
    time: datetime  # aware UTC, from the delivery
    source: str  # ingest_source(kind, host)
    actor: str | None = None
    # preconditions: only the `cloudevents` kind carries them (a registry never does)
    previous_artifact: str | None = None
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class Ignored:
    """An entry that is not a tag change; the reason is a low-cardinality label."""

    reason: str  # pull, blob, untagged, ping, scan, digest_delete, not_container, other_action, …
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Handshake:
    """A subscription validation (acr Event Grid): answered with ``body``, nothing published."""

    body: dict[str, object]


class MappingError(Exception):
    """The body cannot be mapped: answered 400 problem+json naming ``location``."""

    def __init__(self, location: str, message: str, value: object = None) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message
        self.value = value


Mapped = TagChange | Ignored | Handshake


def ingest_source(kind: str, host: str) -> str:
    """The CloudEvents ``source`` of events read from ``kind`` deliveries about ``host``."""
    return f"urn:ocitag:ingest:{kind}:{host}"


def body_event_id(body: bytes, index: int) -> str:
    """An id for an entry of a payload that carries none: the SHA-256 of the raw body and
    the entry's index, so a retried (byte-identical) delivery yields the same ids."""
    return f"sha256:{hashlib.sha256(body).hexdigest()}:{index}"
