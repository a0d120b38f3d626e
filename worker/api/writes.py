"""A write (``PUT`` / ``DELETE /ocitags/{tag}/``): an event on the input topic, answered
with its outcome. Subscribed to the outcome BEFORE publishing (the outcome may overtake
the acknowledgement); within OCITAG_API_TIMEOUT_SECONDS, else 202 with where to look.

A publish not acknowledged by the deadline is answered 503 and runs on to its own end
(the producer's delivery bound, worker/delivery.py), as ingest's sends do
(worker/ingest/sending.py): its failure is then counted by the producer, which replaces
itself when it is wedged. Cancelled at the deadline, it counted for nothing, and an api
whose producer never acknowledged answered 503 for ever."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from worker import metrics
from worker.api import replies, requests
from worker.api.backends import Backends, database
from worker.api.problems import unacknowledged, unavailable, unpublished
from worker.api.replies import Reply
from worker.encode import build_event, to_record
from worker.errors import TransientError
from worker.kafka import BrokerUnreachableError, Message
from worker.settings import Settings
from worker.shutdown import finish_or_cancel
from worker.timefmt import format_rfc3339

log = structlog.get_logger("worker.api")

#: how long the api's shutdown waits for publishes still running on once no request is
#: left, before it cancels them (as ingest waits for its sends)
RUN_ON_GRACE_SECONDS = 5.0


class Writer:
    def __init__(
        self, settings: Settings, backends: Callable[[], Backends], clock: Callable[[], datetime]
    ) -> None:
        self._topic = settings.topics.input_topic
        self._timeout = settings.api.api_timeout_seconds
        self._backends = backends
        self._clock = clock
        #: publishes that outlived their request, kept until they end (``close``)
        self._running_on: set[asyncio.Future[None]] = set()

    async def write(
        self,
        request: web.Request,
        ocitag: str,
        change: tuple[str | None, str | None, str | None],
        fields: dict[str, Any],
    ) -> Reply:
        """``change``: (artifact, actor, previous_artifact); all None for a deletion.
        ``fields``: the request's canonical log line."""
        artifact, actor, previous_artifact = change
        backends = self._backends()
        fields["ocitag_id"] = ocitag
        headers = request.headers
        expected = requests.expected_version(headers.get("If-Match"), headers.get("If-None-Match"))
        key = requests.idempotency_key(headers.get("Idempotency-Key"))
        publish, reads = backends.publish, backends.reads
        if publish is None:
            raise unavailable("kafka")
        source = requests.api_source(fields["caller"])
        received = self._clock()
        if key is not None:
            if reads is None:
                raise unavailable("db")
            received = await database(reads.received_at(source, key, received))
        event_id = key or str(uuid.uuid4())
        fields["event_id"] = event_id
        event = build_event(
            ocitag,
            artifact,
            actor=actor,
            previous_artifact=previous_artifact,
            expected_version=expected,
            source=source,
            event_id=event_id,
            time=format_rfc3339(received),
        )
        message = Message(self._topic, *to_record(event, "structured"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        # subscribed BEFORE publishing: the outcome may overtake the acknowledgement
        with backends.waiters.expect((source, event_id)) as waiter:
            await self._published(publish([message]), deadline, fields)
            published = loop.time()
            try:
                # in this request's task (no task of wait_for's: two turns of the event
                # loop fewer on the way back, each as long as a busy api's turn)
                async with asyncio.timeout_at(deadline):
                    outcome = await waiter
            except TimeoutError:
                if waiter.done() and not waiter.cancelled():
                    outcome = waiter.result()  # delivered in the turn the deadline fell
                else:
                    metrics.API_OUTCOMES_LATE.inc()
                    fields["outcome"] = "late"
                    return replies.accepted(ocitag, source, event_id)
            finally:
                waited = loop.time() - published
                metrics.API_OUTCOME_WAIT_SECONDS.observe(waited)
                fields["outcome_wait_ms"] = round(waited * 1000, 2)
        version_header = "if-none-match" if "If-None-Match" in headers else "if-match"
        fields["outcome_status"] = outcome.get("status")
        return replies.from_outcome(outcome, version_header=version_header)

    async def _published(
        self, publishing: Awaitable[None], deadline: float, fields: dict[str, Any]
    ) -> None:
        """The publish acknowledged by ``deadline``, else the api's 503. It runs in a task
        of its own, never cancelled here: one done by the time the wait ends is kept,
        even in the turn the deadline fell (a timeout scope would cancel the acknowledged
        publish, a 503 whose retry without Idempotency-Key duplicates); one still running
        runs on (the module's doc)."""
        sending = asyncio.ensure_future(publishing)
        try:
            await asyncio.wait((sending,), timeout=deadline - asyncio.get_running_loop().time())
        finally:  # past the deadline, or the request cancelled
            if not sending.done():
                self._run_on(sending)
        if not sending.done():
            fields["error"] = "publish: TimeoutError"
            raise unacknowledged()
        try:
            sending.result()
        except BrokerUnreachableError as exc:  # refused before the producer had it
            fields["error"] = "publish: kafka unreachable"
            raise unpublished() from exc
        except (TransientError, TimeoutError) as exc:
            fields["error"] = f"publish: {type(exc).__name__}"
            raise unacknowledged() from exc

    def _run_on(self, sending: asyncio.Future[None]) -> None:
        self._running_on.add(sending)
        sending.add_done_callback(self._ran_on)

    def _ran_on(self, sending: asyncio.Future[None]) -> None:
        """A publish that outlived its request ended: forgotten, its failure retrieved
        (the producer counted it and said what it means)."""
        self._running_on.discard(sending)
        if not sending.cancelled() and sending.exception() is not None:
            log.debug("api_publish_failed_late", error=str(sending.exception())[:300])

    async def close(self) -> None:
        """On shutdown, once no request is left: the publishes still running on, waited
        for at most RUN_ON_GRACE_SECONDS, then cancelled (the producer, stopped after
        this, delivers what it holds)."""
        await finish_or_cancel(self._running_on, RUN_ON_GRACE_SECONDS)
