"""From mapped entries to what a delivery publishes and answers. Pure.

``plan`` checks every tag event against the Identifiers rules (normalising repository
and digest), keeps the ignored entries with their reasons, and picks out a handshake;
``messages`` builds the input events (through the one builder, ``worker.encode``),
keyed by their OCITag ID; ``accepted_body`` is the 2xx answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from worker.encode import build_event, to_record
from worker.identifiers import (
    DEFAULT_DOMAIN,
    DOCKER_ALIASES,
    InvalidIdentifierError,
    normalize_digest,
    normalize_repository,
    validate_tag,
)
from worker.ingest.mapping import Handshake, Ignored, Mapped, MappingError, TagChange
from worker.kafka import Message
from worker.timefmt import format_rfc3339


@dataclass(frozen=True, slots=True)
class Plan:
    events: tuple[TagChange, ...]  # normalised; digest None: still to be resolved
    ignored: tuple[tuple[int, Ignored], ...]  # (entry index, why)
    handshake: Handshake | None = None


def plan(mapped: Sequence[Mapped], *, hosted: bool = True) -> Plan:
    """Check and normalise every tag event; MappingError names the first broken one.
    ``hosted``: the kind's repositories start with the registry host (all but the
    ``cloudevents`` kind, whose senders name repositories as ``docker pull`` does)."""
    events: list[TagChange] = []
    ignored: list[tuple[int, Ignored]] = []
    handshake: Handshake | None = None
    for index, entry in enumerate(mapped):
        if isinstance(entry, Handshake):
            handshake = handshake or entry
        elif isinstance(entry, Ignored):
            ignored.append((index, entry))
        else:
            event = normalised(entry, index, hosted=hosted)
            if event not in events:  # the same event twice in one delivery is one event
                events.append(event)
    return Plan(tuple(events), tuple(ignored), handshake)


def normalised(event: TagChange, index: int, *, hosted: bool = True) -> TagChange:
    where = f"entries[{index}]"
    try:
        repository = normalize_repository(event.repository)
    except InvalidIdentifierError as exc:
        raise MappingError(f"{where}.repository", str(exc), event.repository) from None
    if hosted:
        _check_host(event.repository, repository, f"{where}.repository")
    try:
        tag = validate_tag(event.tag)
    except InvalidIdentifierError as exc:
        raise MappingError(f"{where}.tag", str(exc), event.tag) from None
    digest = _digest(event.digest, f"{where}.digest")
    previous = _digest(event.previous_artifact, f"{where}.previous_artifact")
    if event.time.tzinfo is None:
        raise MappingError(f"{where}.time", "must carry a UTC offset", event.time.isoformat())
    return replace(event, repository=repository, tag=tag, digest=digest, previous_artifact=previous)


def _check_host(raw: str, canonical: str, location: str) -> None:
    """Docker's rule reads a first component without '.', ':' or upper case as a Docker
    Hub path: a registry reached as ``http://registry/`` would have its tags filed under
    ``docker.io/registry/…``. Refused (400) rather than recorded as another registry's."""
    host = raw.split("/", 1)[0]
    if (
        canonical.startswith(f"{DEFAULT_DOMAIN}/")
        and host != DEFAULT_DOMAIN
        and host not in DOCKER_ALIASES
    ):
        raise MappingError(
            location,
            f"registry host '{host}' would read as a Docker Hub path ({canonical}): "
            "name the registry by a host with a '.' or a ':port' (?registry=<host> "
            "where the kind takes it)",
            raw,
        )


def _digest(value: str | None, location: str) -> str | None:
    if value is None:
        return None
    try:
        return normalize_digest(value)
    except InvalidIdentifierError as exc:
        raise MappingError(location, str(exc), value) from None


def cloud_event(event: TagChange) -> dict[str, Any]:
    """The input event (structured CloudEvent) of a normalised, resolved tag event."""
    if event.action == "moved" and event.digest is None:
        raise ValueError("a move needs its digest resolved before it is published")
    return build_event(
        f"{event.repository}:{event.tag}",
        event.digest if event.action == "moved" else None,
        actor=event.actor,
        previous_artifact=event.previous_artifact,
        expected_version=event.expected_version,
        source=event.source,
        event_id=event.event_id,
        time=format_rfc3339(event.time),
    )


def messages(topic: str, events: Sequence[dict[str, Any]]) -> list[Message]:
    """Kafka messages (structured mode, keyed by OCITag ID) of the built events."""
    return [Message(topic, *to_record(event, "structured")) for event in events]


def accepted_body(
    events: Sequence[dict[str, Any]], ignored: Sequence[tuple[int, Ignored]]
) -> dict[str, Any]:
    """What a 2xx says: the events published (acknowledged) and the entries ignored."""
    return {
        "published": [
            {"id": e["id"], "source": e["source"], "type": e["type"], "subject": e["subject"]}
            for e in events
        ],
        "ignored": [
            {"entry": index, "reason": why.reason, **({"detail": why.detail} if why.detail else {})}
            for index, why in ignored
        ],
    }
