"""A Kafka consumer's own stop at shutdown, bounded: leaving its group and closing its
connections wait for a broker that may not answer, and a stop that hangs held the whole
shutdown until SIGKILL. Used by every command that consumes (the worker's input, the
api's listener and state feed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.group_coordinator import GroupCoordinator

from worker.errors import describe

log = structlog.get_logger("worker")

#: how long a Kafka consumer's stop (leaving its group, closing its connections) may take
#: before it is given up: a broker that is there answers in milliseconds; one that does
#: not answer (frozen, or cut off by the network) held aiokafka's stop() for its request
#: timeout (40 s: the LeaveGroup request), past every Deployment's grace period
CONSUMER_STOP_SECONDS = 5.0
#: the same for a consumer without a group (the api's): it has no group to leave, its
#: stop closes its fetcher and connections, no round trip to wait for
GROUPLESS_STOP_SECONDS = 2.0
#: how long closing what a stop given up left running may take: tasks cancelled and
#: sockets closed, no round trip
CLOSE_REST_SECONDS = 1.0


#: what a grouped consumer's stop given up gives up
LEFT_GROUP_GIVEN_UP = (
    "leaving the group (its partitions move after session.timeout.ms); "
    "offsets not committed are redelivered"
)


class StoppingConsumer(Protocol):
    """What ``stop_consumer`` needs of a consumer: aiokafka's, or a fake in unit tests."""

    def assignment(self) -> set[TopicPartition]: ...

    async def stop(self) -> None: ...


async def stop_consumer(consumer: StoppingConsumer, name: str, *, grouped: bool = True) -> bool:
    """Stop ``consumer`` (its group left, its connections closed) within
    CONSUMER_STOP_SECONDS (GROUPLESS_STOP_SECONDS unless ``grouped``); past that, or
    when its stop fails, the stop is given up (cancelled, and what it left running
    closed: at most twice CLOSE_REST_SECONDS more) and one warning,
    ``consumer_stop_abandoned``, names the consumer and what was given up: the group is
    not told it left (the broker moves its partitions after ``session.timeout.ms``), and
    offsets that were not committed are redelivered, to this command's next start or
    another member; a consumer without a group gives up nothing but a clean close.
    True when the stop ended cleanly.

    Every command commits what it commits before this (the worker's drain), so nothing
    done is lost here; a stop that hangs held the whole shutdown until SIGKILL."""
    within = CONSUMER_STOP_SECONDS if grouped else GROUPLESS_STOP_SECONDS
    partitions = sorted(tp.partition for tp in consumer.assignment())
    stopping = asyncio.ensure_future(consumer.stop())
    stopping.add_done_callback(_retrieved)
    try:
        await asyncio.wait({stopping}, timeout=within)
    except asyncio.CancelledError:
        stopping.cancel()
        raise
    if not stopping.done():
        stopping.cancel()
        await asyncio.wait({stopping}, timeout=CLOSE_REST_SECONDS)
        error = f"TimeoutError: not stopped within {within:g} s"
    elif stopping.cancelled():  # aiokafka's stop can end so: a fetch it cancels re-raises
        error = "CancelledError: its stop was cancelled from inside"
    elif (failure := stopping.exception()) is not None:
        error = describe(failure)
    else:
        return True
    await _close_rest(consumer, CLOSE_REST_SECONDS)
    log.warning(
        "consumer_stop_abandoned",
        consumer=name,
        error=error,
        partitions=partitions,
        given_up=LEFT_GROUP_GIVEN_UP if grouped else "closing its connections cleanly",
    )
    return False


def _retrieved(stopping: asyncio.Future[None]) -> None:
    """A stop given up that fails later has nobody to tell: its failure is retrieved
    rather than reported by the event loop as lost."""
    if not stopping.cancelled():
        stopping.exception()


async def _close_rest(consumer: object, within: float) -> None:
    """What aiokafka's stop leaves running when it is cut short: the group's background
    tasks, the fetcher and the client's connections (private fields of aiokafka 0.14,
    pinned by tests/unit/test_consumer_stop.py). Each step ends with what it ends with."""
    if not isinstance(consumer, AIOKafkaConsumer):
        return
    steps: list[Callable[[], Awaitable[object]]] = []
    coordinator = consumer._coordinator
    if isinstance(coordinator, GroupCoordinator):
        coordinator._coordination_task.cancel()
        steps += [coordinator._stop_heartbeat_task, coordinator._stop_commit_offsets_refresh_task]
    if consumer._fetcher is not None:
        steps.append(consumer._fetcher.close)
    steps.append(consumer._client.close)

    async def close_all() -> None:
        for step in steps:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await step()

    closing = asyncio.ensure_future(close_all())
    try:
        await asyncio.wait({closing}, timeout=within)
    finally:
        if not closing.done():
            closing.cancel()
