"""A send's acknowledgements, waited for within a bound; a producer that missed it,
closed without delivering what it still holds.

aiokafka (0.14) retries an idempotent producer's record batch for as long as it takes:
once a batch was sent its sender never expires it ("If idempotence is enabled we never
expire batches, but retry until we succeed", aiokafka/producer/sender.py), and it has
no ``delivery.timeout.ms`` (the Java client's bound on a send, 120 s by default). A
leader that keeps answering NOT_ENOUGH_REPLICAS, or a producer wedged after a leader
change, then holds the batch that sent it for ever: its partition paused, nothing
logged, no retry counted, until someone restarts the process. So the wait for a send's
acknowledgements ends after ``DELIVERY_TIMEOUTS`` request timeouts (each attempt is
bounded by one, and a batch may wait behind one other of its partition: idempotence
sends one at a time), with ``DeliveryTimeoutError``; the caller replaces the producer
and retries the send with the one backoff policy (worker/kafka.py ``Producer``).

The replaced producer must not deliver what it holds after its successor sent it
again (a state record delivered late would come after a newer one of its tag: the
compacted topic keeps the last). aiokafka's ``stop()`` delivers everything first, for as
long as that takes, and cancelled half-way it leaves its sender running; ``abort``
stops its sender, fails what the producer still holds and closes its connections instead.
It reads private fields of the client (tests/unit/test_delivery.py pins them to the
installed version)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

#: request timeouts a send's acknowledgements are waited for
DELIVERY_TIMEOUTS = 3


class DeliveryTimeoutError(KafkaTimeoutError):  # type: ignore[misc]
    """Some of a send's record batches were not acknowledged within the bound."""


def delivery_timeout(request_timeout_ms: int) -> float:
    """Seconds a send's acknowledgements are waited for."""
    return DELIVERY_TIMEOUTS * request_timeout_ms / 1000


async def acknowledged(futures: Sequence[asyncio.Future[Any]], within: float) -> list[Any]:
    """The results of ``futures`` (an exception as the result of a future that failed),
    once every one is done, for at most ``within`` seconds; else DeliveryTimeoutError.
    The futures are the producer's, never cancelled here."""
    if not futures:
        return []
    try:
        done, pending = await asyncio.wait(futures, timeout=within)
    except BaseException:  # a cancelled caller (the api's deadline, a shutdown)
        _retrieve_later(futures)
        raise
    if pending:
        _retrieve_later(futures)
        # a failure already known says more than the wait for the others (a message too
        # large, a topic not authorised): the caller classifies it, no replacement
        failed = next((f.exception() for f in done if f.exception() is not None), None)
        if failed is not None:
            raise failed
        raise DeliveryTimeoutError(
            f"{len(pending)} of {len(futures)} record batches not acknowledged within {within:g} s"
        )
    return [f.exception() or f.result() for f in futures]


def _retrieve_later(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Futures given up on: one that fails later has nobody to tell, so its failure is
    retrieved rather than reported as lost (a wait that ends well reads them all)."""
    for future in futures:
        future.add_done_callback(_retrieved)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Abandoned(NamedTuple):
    """What ``abort`` failed: record batches (those waiting and those in flight) and the
    records in them, as aiokafka counts them (never their contents)."""

    batches: int
    records: int


async def abort(producer: AIOKafkaProducer, error: BaseException, grace: float) -> Abandoned:
    """Close ``producer`` without delivering what it holds: it takes no more sends, its
    sender stops (a request already sent is waited for, at most ``grace`` seconds), what
    it still holds fails with ``error``, and its connections close (at most ``grace``
    seconds more). A later ``stop()`` does nothing. Returns what was failed.

    The sender stops first: a request of it that fails while it stops puts its batch
    back in the accumulator (aiokafka's retry), which raised a KeyError inside the
    sender (and an AttributeError in its callback) when the batch had been failed
    already. A batch sent once and put back keeps aiokafka's callback that takes it out
    of the batches in flight when it ends: it is counted in flight again, so that the
    callback finds it."""
    producer._closed = True
    sender = producer._sender
    if sender is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sender.close(), grace)
    held = producer._message_accumulator
    waiting = [b for queue in held._batches.values() for b in queue]
    batches = waiting + list(held._pending_batches - set(waiting))
    held._pending_batches.update(b for b in waiting if b.retry_count)
    held.fail_all(error)
    for batch in batches:  # what a send would wait on: failed, and nobody waits any more
        waiter = batch._drain_waiter
        if waiter.done() and not waiter.cancelled():
            waiter.exception()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.client.close(), grace)
    return Abandoned(len(batches), sum(b.record_count for b in batches))
