"""Sending a delivery's events within its deadline, without piling up copies.

A send that outlives its delivery's deadline is left to finish (``asyncio.wait``, not
``wait_for``), and a retry of the same delivery waits for it instead of sending the same
events again: a registry retrying every second while Kafka is away must not pile up
copies. Sends in flight are known by record value (the same delivery builds the same
bytes). On shutdown, the sends still running are given SEND_GRACE_SECONDS, then
cancelled (``close``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from worker.kafka import Message
from worker.shutdown import finish_or_cancel
from worker.startup import EventSink

log = structlog.get_logger("worker.ingest")

#: how long ingest's shutdown, once no delivery is left, waits for sends that outlived
#: their delivery before it cancels them
SEND_GRACE_SECONDS = 5.0


class AckTimeoutError(Exception):
    """Kafka did not acknowledge every event within the deadline (the send goes on)."""


class InFlightSends:
    """The sends in flight, by record value: a retried delivery joins them."""

    def __init__(self, sink: EventSink) -> None:
        self._sink = sink
        self._sending: dict[bytes | None, asyncio.Future[None]] = {}

    async def send(self, batch: Sequence[Message], budget: float) -> None:
        """Every message acknowledged within ``budget`` seconds; else AckTimeoutError,
        or the error of a send that failed (the sink's TransientError when Kafka is away)."""
        waits = {self._sending[m.value] for m in batch if m.value in self._sending}
        fresh = [m for m in batch if m.value not in self._sending]
        if fresh:
            task = asyncio.ensure_future(self._sink.send_all(fresh))
            values = [m.value for m in fresh]
            for value in values:
                self._sending[value] = task
            task.add_done_callback(lambda done: self._sent(done, values))
            waits.add(task)
        done, pending = await asyncio.wait(waits, timeout=max(budget, 0.001))
        if pending:
            raise AckTimeoutError("Kafka did not acknowledge within the deadline")
        for finished in done:
            error = finished.exception()
            if error is not None:
                raise error

    async def close(self) -> None:
        """Sends that outlived their delivery: waited for at most SEND_GRACE_SECONDS,
        then cancelled (the producer, stopped after this, is not left with senders
        waiting on it, and no send is still pending when the process ends)."""
        await finish_or_cancel(self._sending.values(), SEND_GRACE_SECONDS)

    def _sent(self, task: asyncio.Future[None], values: list[bytes | None]) -> None:
        for value in values:
            if self._sending.get(value) is task:
                del self._sending[value]
        if not task.cancelled() and task.exception() is not None:
            log.debug("ingest_send_failed", error=str(task.exception()))
