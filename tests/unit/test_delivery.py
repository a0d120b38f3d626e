"""A send's acknowledgements waited for within a bound, a producer that missed it
replaced and aborted, and one whose idempotence state broke replaced as well
(worker/delivery.py, worker/kafka.py ``Producer``)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    UnknownProducerId,
)

from tests.helpers.producers import FreshProducer, Scripted, never_stopping, wedged_producer
from worker import metrics
from worker.delivery import (
    DELIVERY_TIMEOUTS,
    DeliveryTimeoutError,
    abort,
    acknowledged,
    delivery_timeout,
)
from worker.errors import Cause, TransientError
from worker.kafka import PUBLISHING_OUTCOMES, Message, Producer
from worker.settings import load_settings


def test_the_bound_is_a_few_request_timeouts() -> None:
    assert delivery_timeout(30_000) == DELIVERY_TIMEOUTS * 30.0
    assert delivery_timeout(10_000) == DELIVERY_TIMEOUTS * 10.0


async def test_acknowledgements_come_back_in_order_failures_as_results() -> None:
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    refused = KafkaTimeoutError("no leader")
    loop.call_later(0.01, second.set_exception, refused)
    first.set_result("offset 7")
    assert await acknowledged([first, second], within=5) == ["offset 7", refused]
    assert await acknowledged([], within=0) == []


async def reported_when_it_fails(held: list[asyncio.Future[Any]]) -> list[dict[str, Any]]:
    """What the loop reports once the one future in ``held`` (a producer's, its only
    reference) fails and is collected: a failure nobody retrieved would be one report."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        held[0].set_exception(ProducerClosed("replaced"))
        await asyncio.sleep(0)
        held.clear()
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    return reported


async def test_an_acknowledgement_that_never_comes_ends_the_wait() -> None:
    loop = asyncio.get_running_loop()
    done, never = loop.create_future(), loop.create_future()
    done.set_result(None)
    with pytest.raises(DeliveryTimeoutError, match="1 of 2 record batches not acknowledged"):
        await asyncio.wait_for(acknowledged([done, never], within=0.05), 5)
    assert not never.cancelled()  # the producer's future: not ours to cancel
    # failed afterwards (its producer aborted), it is not reported as never retrieved
    held = [never]
    del never
    assert await reported_when_it_fails(held) == []


async def test_a_failure_already_known_is_raised_rather_than_the_timeout() -> None:
    """A batch refused for good (too large) while another waits: the caller classifies
    the refusal (no producer replaced for it)."""
    loop = asyncio.get_running_loop()
    refused, never = loop.create_future(), loop.create_future()
    refused.set_exception(MessageSizeTooLargeError())
    with pytest.raises(MessageSizeTooLargeError):
        await asyncio.wait_for(acknowledged([refused, never], within=0.05), 5)


async def test_a_wait_cancelled_by_its_caller_leaves_no_failure_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    later = loop.create_future()
    waiting = asyncio.create_task(acknowledged([later], within=30))
    await asyncio.sleep(0)
    waiting.cancel()  # the api's deadline, a shutdown
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not later.cancelled()  # the producer's future: not ours to cancel
    held = [later]
    del later
    assert await reported_when_it_fails(held) == []


async def test_a_send_never_acknowledged_is_retried_on_a_new_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before the bound, the wait never ended: the batch stayed in flight, its partition
    paused, nothing said. Now: a line, a transient timeout (the batch retries and the
    retry is counted), a new producer at once, and the old one aborted: what it held
    fails rather than being delivered after its successor sent it again."""
    wedged = wedged_producer(
        monkeypatch, delivery_timeout=0.05, component="the worker", action=PUBLISHING_OUTCOMES
    )
    producer, stuck, fresh = wedged.producer, wedged.stuck, wedged.fresh
    recreated = metrics.PRODUCER_RECREATED._value.get()
    message = Message("outcomes", b"k", b"v", [])
    try:
        with structlog.testing.capture_logs() as captured:
            with pytest.raises(TransientError) as raised:
                await asyncio.wait_for(producer.send_each([message]), 5)
            assert raised.value.cause is Cause.KAFKA_TIMEOUT
            await producer.send_each([message])  # the retry
            await asyncio.gather(*producer._retired)
    finally:
        await producer.stop()
    assert fresh.sent == [b"v"]
    assert metrics.PRODUCER_RECREATED._value.get() == recreated + 1
    events = [c["event"] for c in captured]
    assert events[:2] == ["delivery_timed_out", "producer_recreated"]
    assert "1 of 1 record batches not acknowledged within 0.05 s" in captured[0]["error"]
    assert stuck._closed


async def test_abort_fails_what_the_producer_holds() -> None:
    """The aiokafka fields ``abort`` reaches into (worker/delivery.py), pinned to the
    installed version: a batch still in the accumulator fails, nothing is delivered, and
    stop() afterwards does nothing."""
    producer = AIOKafkaProducer(bootstrap_servers="localhost:1", enable_idempotence=True)
    held = await producer._message_accumulator.add_message(
        TopicPartition("outcomes", 0), b"k", b"v", timeout=1
    )
    await abort(producer, ProducerClosed("replaced"), grace=1)
    with pytest.raises(ProducerClosed):
        await asyncio.wait_for(held, 1)
    assert producer._closed
    await asyncio.wait_for(producer.stop(), 1)


class RetryingSender:
    """aiokafka's sender stopped with a request in flight that fails retriably: its
    batch is put back in the accumulator (aiokafka's retry)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._accumulator = producer._message_accumulator
        self.put_back = False

    async def close(self) -> None:
        self._accumulator.reenqueue(next(iter(self._accumulator._pending_batches)))
        self.put_back = True


async def aborted_with_one_put_back(*, in_flight: bool) -> tuple[Any, ...]:
    """Abort a producer (not started) holding one record whose batch was sent once: put
    back already, or (``in_flight``) still in flight and put back as its sender stops.
    Returns what abort failed, the record's failure, what the loop reported and the
    sender."""
    producer = AIOKafkaProducer(bootstrap_servers="localhost:1")
    tp = TopicPartition("outcomes", 0)
    held = await producer._message_accumulator.add_message(tp, b"k", b"v", timeout=1)
    batch = producer._message_accumulator._pop_batch(tp)  # what the sender sends
    sender = RetryingSender(producer)
    if in_flight:
        producer._sender = sender
    else:
        producer._message_accumulator.reenqueue(batch)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        abandoned = await abort(producer, ProducerClosed("stopping"), grace=1)
        failure = await asyncio.wait_for(asyncio.gather(held, return_exceptions=True), 1)
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    return abandoned, failure[0], reported, sender


async def test_abort_fails_a_batch_put_back_by_a_retry() -> None:
    """A batch sent once and put back (the broker away: aiokafka retries it) keeps the
    callback that takes it out of the batches in flight: failed as it was, that raised a
    KeyError inside the loop's callbacks."""
    abandoned, failure, reported, _ = await aborted_with_one_put_back(in_flight=False)
    assert abandoned == (1, 1)
    assert isinstance(failure, ProducerClosed)
    assert reported == []


async def test_abort_stops_the_sender_before_it_fails_what_is_held() -> None:
    """A request that fails while the sender stops puts its batch back (aiokafka's
    retry): failed before that, the batch was no longer in flight, and the sender ended
    with a KeyError (and an AttributeError in its own callback, reported by the loop)."""
    abandoned, failure, reported, sender = await aborted_with_one_put_back(in_flight=True)
    assert sender.put_back
    assert abandoned == (1, 1)
    assert isinstance(failure, ProducerClosed)
    assert reported == []


async def test_a_replaced_producer_that_does_not_stop_in_time_is_aborted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka's stop() delivers everything first, for as long as that takes; cancelled
    half-way it left the sender retrying in the background. Now, past the grace, what
    the replaced producer holds fails and it is closed."""
    producer = Producer(load_settings({}, environ={}), component="the worker", action="testing")
    old = AIOKafkaProducer(bootstrap_servers="localhost:1", enable_idempotence=True)
    held = await never_stopping(old, monkeypatch)
    monkeypatch.setattr("worker.kafka.RETIRE_SECONDS", 0.05)
    try:
        with structlog.testing.capture_logs() as captured:
            await asyncio.wait_for(producer._retire(old, KafkaTimeoutError("stuck"), flush=True), 5)
    finally:
        await producer.stop()
    assert [c["event"] for c in captured] == ["producer_aborted"]
    assert captured[0]["stop_error"] == "TimeoutError"
    with pytest.raises(ProducerClosed, match=r"replaced: .*stuck"):
        await asyncio.wait_for(held, 1)
    assert old._closed


async def test_a_producer_whose_stop_never_ends_is_aborted_within_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka's stop() delivers everything first, for as long as that takes: a command
    stopping with a wedged producer hung until it was killed. Now, past STOP_SECONDS,
    what the producer holds fails, it is closed, and one line says how much was given
    up (counts, never the records)."""
    producer = Producer(load_settings({}, environ={}), component="ingest", action="testing")
    stuck = producer._producer
    held = await never_stopping(stuck, monkeypatch)
    monkeypatch.setattr("worker.kafka.STOP_SECONDS", 0.05)
    with structlog.testing.capture_logs() as captured:
        await asyncio.wait_for(producer.stop(), 5)
    with pytest.raises(ProducerClosed, match="stopping"):
        await asyncio.wait_for(held, 1)
    assert stuck._closed
    assert captured == [
        {
            "event": "producer_aborted",
            "log_level": "warning",
            "reason": "ProducerClosed: stopping: not delivered in time",
            "stop_error": "TimeoutError",
            "batches": 1,
            "records": 1,
        }
    ]


async def test_a_producer_replaced_just_before_the_stop_is_aborted_within_the_stops_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replaced producer is given RETIRE_SECONDS (10 s) to deliver what it holds, and
    its abort up to twice that: the command's stop waited for it, past the api's 30 s
    grace. Now the stop cuts the retiring short and aborts it beside its own producer,
    within the stop's bound; what it held fails, and its line says why."""
    producer = Producer(load_settings({}, environ={}), component="the api", action="testing")
    old = producer._producer
    held = await never_stopping(old, monkeypatch)
    monkeypatch.setattr("worker.kafka.new_producer", lambda _: FreshProducer())
    monkeypatch.setattr("worker.kafka.STOP_SECONDS", 0.05)
    with structlog.testing.capture_logs() as captured:
        await producer._maybe_recreate(old, OutOfOrderSequenceNumber())  # retired, flushing
        await asyncio.sleep(0.01)  # its stop() under way: the 10 s wait has begun
        await asyncio.wait_for(producer.stop(), 1)
    with pytest.raises(ProducerClosed, match="stopping: replaced"):
        await asyncio.wait_for(held, 1)
    assert old._closed
    assert producer._retired == {}
    assert [(c["event"], c.get("reason")) for c in captured] == [
        ("producer_recreated", None),
        ("producer_aborted", "ProducerClosed: stopping: replaced, not delivered in time"),
    ]


async def test_a_producer_stopping_is_not_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A send that the stop's abort failed is not a stuck producer to replace: a fresh
    one started then would be stopped by nobody."""
    producer = Producer(load_settings({}, environ={}), component="ingest", action="testing")
    stopping = producer._producer
    monkeypatch.setattr("worker.kafka.new_producer", lambda _: pytest.fail("replaced"))
    await producer.stop()
    await producer._maybe_recreate(stopping, ProducerClosed("stopping: not delivered in time"))
    assert producer._producer is stopping


@pytest.mark.parametrize(
    "refusal",
    [ProducerFenced(), OutOfOrderSequenceNumber(), UnknownProducerId()],
    ids=lambda e: type(e).__name__,
)
async def test_a_producer_whose_idempotence_state_broke_is_replaced(
    refusal: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka turns a broker's INVALID_PRODUCER_EPOCH into ProducerFenced: that was a
    PermanentError, which fails the batch as a bug and stops the worker. Like the
    sequence errors, it now replaces the producer and the batch retries."""
    producer = Producer(load_settings({}, environ={}), component="the worker", action="testing")

    async def refused(*_: object, **__: object) -> asyncio.Future[None]:
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(refusal)
        return failed

    monkeypatch.setattr(producer._producer, "send", refused)
    fresh = FreshProducer()
    monkeypatch.setattr("worker.kafka.new_producer", lambda _: fresh)
    try:
        with pytest.raises(TransientError) as raised:
            await producer.send_each([Message("outcomes", b"k", b"v", [])])
        await producer.send_each([Message("outcomes", b"k", b"again", [])])
    finally:
        await producer.stop()
    assert raised.value.cause is Cause.KAFKA_PRODUCER
    assert fresh.sent == [b"again"]


async def replaced_with_a_send_waiting(
    monkeypatch: pytest.MonkeyPatch, successor: Scripted
) -> tuple[Producer, asyncio.Future[None], asyncio.Task[None]]:
    """A Producer (replaced after 2 timeouts in a row) whose client has one send waiting
    for its acknowledgement (the future returned) when a concurrent send is fenced and
    replaces the client with ``successor``; the waiting send's task is returned too."""
    producer = Producer(
        load_settings({}, environ={}), component="the worker", action="testing", stuck_after=2
    )
    late: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    old = Scripted(late, ProducerFenced())
    monkeypatch.setattr(producer._producer, "send", old.send)
    monkeypatch.setattr("worker.kafka.new_producer", lambda _: successor)
    waiting = asyncio.create_task(producer.send_each([Message("outcomes", b"k", b"late", [])]))
    while not old.sent:
        await asyncio.sleep(0)
    with pytest.raises(TransientError):  # fenced: replaced at once
        await producer.send_each([Message("outcomes", b"k", b"fenced", [])])
    assert producer._producer is successor
    return producer, late, waiting


async def test_a_replaced_producers_late_failure_does_not_count_against_its_successor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A send of the replaced producer that fails afterwards counted as a failure of
    its successor: one timeout of the successor then replaced it, where it takes two."""
    successor = Scripted(KafkaTimeoutError())
    producer, late, waiting = await replaced_with_a_send_waiting(monkeypatch, successor)
    monkeypatch.setattr("worker.kafka.new_producer", lambda _: FreshProducer())
    try:
        late.set_exception(KafkaTimeoutError("the replaced producer's"))
        with pytest.raises(TransientError):
            await waiting
        with pytest.raises(TransientError):  # the successor's first timeout
            await producer.send_each([Message("outcomes", b"k", b"v", [])])
        assert producer._producer is successor
    finally:
        await producer.stop()


async def test_a_replaced_producers_late_success_does_not_clear_its_successors_failures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The mirror: a send of the replaced producer acknowledged afterwards cleared its
    successor's count, and a successor timing out between such late successes was
    never replaced."""
    spare = FreshProducer()
    successor = Scripted(KafkaTimeoutError(), KafkaTimeoutError())
    producer, late, waiting = await replaced_with_a_send_waiting(monkeypatch, successor)
    monkeypatch.setattr("worker.kafka.new_producer", lambda _: spare)
    try:
        with pytest.raises(TransientError):  # the successor's first timeout
            await producer.send_each([Message("outcomes", b"k", b"v", [])])
        late.set_result(None)
        await waiting  # the replaced producer's late acknowledgement
        with pytest.raises(TransientError):  # its second in a row: replaced
            await producer.send_each([Message("outcomes", b"k", b"v", [])])
        assert producer._producer is spare
    finally:
        await producer.stop()
