"""A Kafka consumer's stop at shutdown, bounded (worker/consumerstop.py ``stop_consumer``):
aiokafka's stop() leaves the group and waits for the broker's answer for its whole
request timeout (40 s when the broker does not answer), which held every command's
shutdown until it was killed. Fakes behind ``StoppingConsumer``; the real client's
private fields that the bound closes are pinned here too."""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.group_coordinator import GroupCoordinator

from worker import consumerstop
from worker.consumerstop import stop_consumer


class FakeConsumer:
    """A consumer of two partitions whose stop does what ``how`` says: ``clean``,
    ``hangs`` (for ever, as aiokafka's while the broker does not answer), ``fails``, or
    ``cancelled`` (aiokafka's stop can end with a CancelledError of its own: a fetch
    task it cancels and awaits re-raises it)."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.stop_cancelled = False

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("in", 3), TopicPartition("in", 1)}

    async def stop(self) -> None:
        if self.how == "hangs":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.stop_cancelled = True
                raise
        if self.how == "fails":
            raise OSError("connection reset")
        if self.how == "cancelled":
            raise asyncio.CancelledError


@pytest.fixture(autouse=True)
def short_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumerstop, "CONSUMER_STOP_SECONDS", 0.1)


async def test_a_clean_stop_says_nothing() -> None:
    with structlog.testing.capture_logs() as captured:
        assert await stop_consumer(FakeConsumer("clean"), "input") is True
    assert captured == []


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("hangs", "TimeoutError: not stopped within 0.1 s"),
        ("fails", "OSError: connection reset"),
        ("cancelled", "CancelledError: its stop was cancelled from inside"),
    ],
)
async def test_a_stop_that_does_not_end_well_is_given_up_with_one_line(
    how: str, error: str
) -> None:
    consumer = FakeConsumer(how)
    started = time.monotonic()
    with structlog.testing.capture_logs() as captured:
        assert await asyncio.wait_for(stop_consumer(consumer, "input"), 5) is False
    assert time.monotonic() - started < 1.0
    assert captured == [
        {
            "event": "consumer_stop_abandoned",
            "log_level": "warning",
            "consumer": "input",
            "error": error,
            "partitions": [1, 3],
            "given_up": "leaving the group (its partitions move after session.timeout.ms); "
            "offsets not committed are redelivered",
        }
    ]
    assert consumer.stop_cancelled is (how == "hangs")  # not left running


async def test_a_consumer_without_a_group_gives_up_only_its_clean_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The api's consumers have no group to leave: their own, shorter bound, and the
    line does not speak of a group."""
    monkeypatch.setattr(consumerstop, "GROUPLESS_STOP_SECONDS", 0.05)
    with structlog.testing.capture_logs() as captured:
        assert not await stop_consumer(FakeConsumer("hangs"), "state feed", grouped=False)
    assert [(c["error"], c["given_up"]) for c in captured] == [
        ("TimeoutError: not stopped within 0.05 s", "closing its connections cleanly")
    ]


async def test_a_caller_cancelled_while_waiting_cancels_the_stop_too() -> None:
    consumer = FakeConsumer("hangs")
    task = asyncio.create_task(stop_consumer(consumer, "input"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert consumer.stop_cancelled


async def test_a_real_consumer_given_up_has_its_client_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka's stop cut short leaves its client's connections and metadata task
    running: they are closed after it (a real client, never started: its stop hangs)."""
    consumer = AIOKafkaConsumer(bootstrap_servers="localhost:1", group_id="g")
    closed: list[str] = []

    async def hangs() -> None:
        consumer._closed = True  # what aiokafka's stop does first
        await asyncio.sleep(3600)

    async def client_closed() -> None:
        closed.append("client")

    monkeypatch.setattr(consumer, "stop", hangs)
    monkeypatch.setattr(consumer._client, "close", client_closed)
    assert await asyncio.wait_for(stop_consumer(consumer, "input"), 5) is False
    assert closed == ["client"]


async def test_the_private_fields_closed_after_a_stop_given_up_are_aiokafkas() -> None:
    """``_close_rest`` reads aiokafka 0.14's private fields: a newer client that renamed
    them fails here, not silently at a shutdown."""
    consumer = AIOKafkaConsumer(bootstrap_servers="localhost:1")
    assert {"_coordinator", "_fetcher", "_client"} <= set(vars(consumer))
    assert "self._coordination_task =" in inspect.getsource(GroupCoordinator.__init__)
    for method in ("_stop_heartbeat_task", "_stop_commit_offsets_refresh_task"):
        assert inspect.iscoroutinefunction(getattr(GroupCoordinator, method))
