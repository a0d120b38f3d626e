"""Fakes of the pipeline's edges (behind the Consumer, OutcomeProducer and EventStore
protocols), for unit tests of the loop's pause/resume/seek/commit rules. Each keeps a
shared ``journal`` of what happened, in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import TopicPartition
from aiokafka.errors import MessageSizeTooLargeError

from worker.errors import Cause, TransientError
from worker.health import Health
from worker.kafka import Message, classify_kafka_error
from worker.outcomes import Outcome
from worker.plan import Item
from worker.state import StateRecord

TOPIC = "in"


def event_value(event_id: str, tag: str = "1.0") -> bytes:
    """A valid structured tag-moved event."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "urn:test",
            "type": "ocitag.moved.v1",
            "time": "2026-01-01T00:00:00Z",
            "data": {"repository": "docker.io/a/b", "tag": tag, "artifact": "a" * 64},
        }
    ).encode()


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


class UnreadableRecordError(Exception):
    """What the fake client raises on a record it 'cannot read'."""


@dataclass
class FakeConsumer:
    """An in-memory consumer of one topic. Records marked unreadable make ``getmany``
    fail when a fetch reaches them, as aiokafka does."""

    journal: list[tuple[str, object]]
    log: dict[TopicPartition, list[FakeRecord]] = field(default_factory=dict)
    assigned: set[TopicPartition] = field(default_factory=set)
    paused: set[TopicPartition] = field(default_factory=set)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    commits: dict[TopicPartition, int] = field(default_factory=dict)
    unreadable: set[tuple[TopicPartition, int]] = field(default_factory=set)
    commit_errors: list[BaseException] = field(default_factory=list)
    #: raised by the next fetches, one each (a broker away)
    fetch_errors: list[BaseException] = field(default_factory=list)
    #: cleared: commits wait at the "broker" until it is set again
    commit_gate: asyncio.Event = field(default_factory=asyncio.Event)
    commit_calls: int = 0

    def __post_init__(self) -> None:
        self.commit_gate.set()

    def add(self, partition: int, *values: bytes | None, key: bytes | None = None) -> None:
        tp = TopicPartition(TOPIC, partition)
        records = self.log.setdefault(tp, [])
        for value in values:
            records.append(
                FakeRecord(TOPIC, partition, len(records), 1_700_000_000_000, key, value)
            )
        self.assigned.add(tp)
        self.positions.setdefault(tp, 0)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.journal.append(("seek", (partition.partition, offset)))
        self.positions[partition] = offset

    async def position(self, partition: TopicPartition) -> int:
        return self.positions[partition]

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[FakeRecord]]:
        await asyncio.sleep(0.001)
        if self.fetch_errors:
            raise self.fetch_errors.pop(0)
        budget = max_records or 10_000
        out: dict[TopicPartition, list[FakeRecord]] = {}
        for tp in sorted(partitions or self.assigned):
            if tp in self.paused or tp not in self.assigned:
                continue
            start = self.positions[tp]
            taken: list[FakeRecord] = []
            for record in self.log.get(tp, [])[start:]:
                if len(taken) >= budget:
                    break
                if (tp, record.offset) in self.unreadable:
                    if not taken:
                        raise UnreadableRecordError(f"header key at {tp.partition}:{record.offset}")
                    break
                taken.append(record)
            if taken:
                out[tp] = taken
                budget -= len(taken)
                self.positions[tp] = taken[-1].offset + 1
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commit_calls += 1
        await self.commit_gate.wait()
        await asyncio.sleep(0)
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        for tp, offset in offsets.items():
            self.journal.append(("commit", (tp.partition, offset)))
            self.commits[tp] = offset

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.commits.get(partition)

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self.log.get(partition, []))


@dataclass
class FakeStore:
    """Applies everything (200), after ``gate`` opens; fails transiently ``transient``
    times first; raises a bug for an event whose id is in ``bugs``."""

    journal: list[tuple[str, object]]
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    transient: int = 0
    bugs: set[str] = field(default_factory=set)
    #: give each outcome a state topic record (as an applied change has)
    with_state: bool = False

    def __post_init__(self) -> None:
        self.gate.set()

    async def apply(self, items: Sequence[Item], processed_at: datetime) -> list[Outcome]:
        ids = [item.event.id for item in items]
        self.journal.append(("apply", ids))
        await self.gate.wait()
        if self.transient:
            self.transient -= 1
            raise TransientError(Cause.DB_CONNECTION, "away")
        if self.bugs & set(ids):
            raise RuntimeError("a bug")
        return [
            Outcome(
                b"k",
                f"ok:{i}".encode(),
                200,
                "created",
                state=StateRecord(f"tag:{i}".encode(), b"{}", 1) if self.with_state else None,
            )
            for i in ids
        ]

    async def ping(self) -> None:
        return None


@dataclass
class FakeOutcomeProducer:
    """Acknowledges every message, after ``gate`` opens; refuses (as the broker does) a
    message over ``limits[topic]`` bytes sent alone, and a batch over it otherwise."""

    journal: list[tuple[str, object]]
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    limits: dict[str, int] = field(default_factory=dict)
    #: how many more sends that include a message to the topic fail (a broker timeout)
    failures: dict[str, int] = field(default_factory=dict)
    sent: list[Message] = field(default_factory=list)
    size: Callable[[Message], int] = lambda m: (
        len(m.value or b"") + sum(len(k) + len(v) for k, v in m.headers)
    )

    def __post_init__(self) -> None:
        self.gate.set()

    async def send_all(self, messages: Sequence[Message]) -> None:
        await self._send(messages)

    async def send_alone(self, messages: Sequence[Message]) -> None:
        await self._send(messages)

    async def _send(self, messages: Sequence[Message]) -> None:
        await self.gate.wait()
        for topic in {m.topic for m in messages}:
            if self.failures.get(topic):
                self.failures[topic] -= 1
                self.journal.append(("send_failed", topic))
                raise TransientError(Cause.KAFKA_TIMEOUT, f"{topic}: request timed out")
        for message in messages:
            limit = self.limits.get(message.topic)
            if limit is not None and self.size(message) > limit:
                raise classify_kafka_error(MessageSizeTooLargeError(), "publishing")
        self.sent.extend(messages)
        self.journal.append(("publish", [m.topic for m in messages]))


def health() -> Health:
    return Health(60.0)


@dataclass
class FakeClock:
    """A monotonic clock that moves only when told: time passing without the event loop
    running anything (a blocked loop, a stuck await)."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
