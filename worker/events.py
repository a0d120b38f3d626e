"""What decoding yields: an event to apply, an event to reject and record, or a record
that is not an event at all. Plain frozen data; no behaviour beyond derived names."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from worker.problems import Problem

OrderKey = tuple[datetime, str, str]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A Kafka record as the consumer hands it over."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def instance(self) -> str:
        """The problem ``instance`` URI naming this record."""
        return f"urn:kafka:{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class TagMoved:
    """A valid tag-moved event, identifiers normalised."""

    source: str
    id: str
    fingerprint: bytes
    time: datetime
    repository: str
    tag: str
    artifact: str
    actor: str
    previous_artifact: str | None
    expected_version: int | None

    @property
    def ocitag_id(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def order_key(self) -> OrderKey:
        return (self.time, self.source, self.id)

    @property
    def has_preconditions(self) -> bool:
        return self.previous_artifact is not None or self.expected_version is not None


@dataclass(frozen=True, slots=True)
class Invalid:
    """A decodable CloudEvent whose data breaks a rule (422). It has an identity, so it
    is recorded like any processed event and replays get the same outcome."""

    source: str
    id: str
    fingerprint: bytes
    subject: str | None
    problem: Problem


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Not a decodable CloudEvent (400): dead-lettered, never stored."""

    problem: Problem
    source: str | None = None
    id: str | None = None


Decoded = TagMoved | Invalid | Undecodable
