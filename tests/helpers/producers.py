"""Fakes of aiokafka's producer inside worker/kafka.py ``Producer``, for unit tests of
its delivery bound, replacement and stop: one that never acknowledges, the fresh one
that replaces it, and one whose stop never ends."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from worker.kafka import Producer
from worker.settings import load_settings


class FreshProducer:
    """What replaces a stuck producer: it starts, and acknowledges every send."""

    def __init__(self) -> None:
        self.sent: list[bytes | None] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, topic: str, value: bytes | None, **_: Any) -> asyncio.Future[None]:
        self.sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Scripted(FreshProducer):
    """A client that starts, and answers its sends in order: with a future the test
    completes, or failed at once with an exception."""

    def __init__(self, *answers: asyncio.Future[None] | BaseException) -> None:
        super().__init__()
        self._answers = list(answers)

    async def send(self, topic: str, value: bytes | None, **_: Any) -> asyncio.Future[None]:
        self.sent.append(value)
        answer = self._answers.pop(0)
        if isinstance(answer, asyncio.Future):
            return answer
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(answer)
        return failed


def never_acknowledging(client: object, monkeypatch: pytest.MonkeyPatch) -> asyncio.Future[None]:
    """Make ``client`` (an aiokafka producer) take every send and never acknowledge it:
    each send is given the future returned here, which nothing completes."""
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def unacknowledged(*_: object, **__: object) -> asyncio.Future[None]:
        return never

    monkeypatch.setattr(client, "send", unacknowledged)
    return never


async def never_stopping(
    client: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch
) -> asyncio.Future[Any]:
    """Make ``client`` (an aiokafka producer, not started) hold one record in its
    accumulator and never end its ``stop()``, as aiokafka's does while it cannot deliver
    what it holds. Returns the record's future, which an abort fails."""
    held: asyncio.Future[Any] = await client._message_accumulator.add_message(
        TopicPartition("outcomes", 0), b"k", b"v", timeout=1
    )

    async def delivering_for_ever() -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(client, "stop", delivering_for_ever)
    return held


@dataclass
class Wedged:
    """A ``Producer`` whose client never acknowledges, and what would replace it."""

    producer: Producer
    stuck: AIOKafkaProducer
    fresh: FreshProducer


def wedged_producer(
    monkeypatch: pytest.MonkeyPatch, *, delivery_timeout: float, component: str, action: str
) -> Wedged:
    """A ``Producer`` (default settings, not started) whose sends are never acknowledged,
    waited for ``delivery_timeout`` seconds; the producer that replaces it is a
    ``FreshProducer``. The caller stops ``producer``."""
    producer = Producer(load_settings({}, environ={}), component=component, action=action)
    producer._delivery_timeout = delivery_timeout
    stuck = producer._producer
    never_acknowledging(stuck, monkeypatch)
    fresh = FreshProducer()
    monkeypatch.setattr("worker.kafka.new_producer", lambda _: fresh)
    return Wedged(producer, stuck, fresh)
