"""What decoding yields: an event to apply, an event to reject and record, or a record
that is not an event at all. Plain frozen data; no behaviour beyond derived names."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from worker.frozen import fast_init
from worker.problems import Problem

OrderKey = tuple[datetime, str, str]


def attribute_location(name: str, binary: bool) -> str:
    """Where a CloudEvents attribute is in the record: a ce_ header or the body."""
    return f"headers.ce_{name}" if binary else f"body.{name}"


@fast_init
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
    #: why the Kafka client could not read the record (then key, value, headers are empty)
    unreadable: str | None = None

    @property
    def instance(self) -> str:
        """The problem ``instance`` URI naming this record."""
        return f"urn:kafka:{self.topic}:{self.partition}:{self.offset}"


class _TagEventMixin:
    """What moves and deletions share: their identity, ordering key and where a broken
    rule is in the record. Fields come from the dataclasses below."""

    __slots__ = ()
    source: str
    id: str
    time: datetime
    repository: str
    tag: str
    previous_artifact: str | None
    expected_version: int | None
    binary: bool

    @property
    def ocitag_id(self) -> str:
        return f"{self.repository}:{self.tag}"

    def attribute_location(self, name: str) -> str:
        return attribute_location(name, self.binary)

    def data_location(self, member: str) -> str:
        return f"body.{member}" if self.binary else f"body.data.{member}"

    @property
    def order_key(self) -> OrderKey:
        return (self.time, self.source, self.id)

    @property
    def has_preconditions(self) -> bool:
        return self.previous_artifact is not None or self.expected_version is not None


@fast_init
@dataclass(frozen=True, slots=True)
class TagMoved(_TagEventMixin):
    """A valid tag-moved event (``ocitag.moved.v1``), identifiers normalised."""

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
    #: arrived in binary content mode: problem locations point at headers, not body
    binary: bool = field(default=False, compare=False)


@fast_init
@dataclass(frozen=True, slots=True)
class TagDeleted(_TagEventMixin):
    """A valid tag-deleted event (``ocitag.deleted.v1``): a move's data without artifact."""

    source: str
    id: str
    fingerprint: bytes
    time: datetime
    repository: str
    tag: str
    actor: str
    previous_artifact: str | None
    expected_version: int | None
    binary: bool = field(default=False, compare=False)


#: an event the decision takes
TagEvent = TagMoved | TagDeleted


@dataclass(frozen=True, slots=True)
class Invalid:
    """A decodable CloudEvent whose data breaks a rule (422). It has an identity, so it
    is recorded like any processed event and replays get the same outcome."""

    source: str
    id: str
    fingerprint: bytes
    #: the canonical OCITag ID when data or the subject attribute names a valid one
    subject: str | None
    problem: Problem
    binary: bool = field(default=False, compare=False)

    def attribute_location(self, name: str) -> str:
        return attribute_location(name, self.binary)


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Not a decodable CloudEvent (400): dead-lettered, never stored. Source, id and
    subject (the canonical OCITag ID) are kept when the input got that far."""

    problem: Problem
    source: str | None = None
    id: str | None = None
    subject: str | None = None


Decoded = TagMoved | TagDeleted | Invalid | Undecodable
