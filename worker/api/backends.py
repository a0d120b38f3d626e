"""What the api's handlers talk to (Kafka to publish, PostgreSQL to read, the waiters of
outcomes, the watch's feed), each None until connected, and the one place a database
answer is turned into the api's errors (503 while PostgreSQL is away)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker import reachability
from worker.api.feed import Feed
from worker.api.store import Reads
from worker.api.waiters import Waiters
from worker.db import classify_db_error
from worker.errors import PermanentError, TransientError
from worker.history_reads import HistoryReads
from worker.kafka import Message

Publish = Callable[[Sequence[Message]], Awaitable[None]]


@dataclass
class Backends:
    """What the handlers talk to; None until connected (then writes or reads are 503)."""

    publish: Publish | None = None
    reads: Reads | None = None
    history: HistoryReads | None = None
    waiters: Waiters = field(default_factory=Waiters)
    #: the state topic's feed of the watches (None until it runs, or with no state topic)
    feed: Feed | None = None


async def database(work: Awaitable[Any]) -> Any:
    """A database answer, or 503 when PostgreSQL is away."""
    try:
        answer = await work
    except Exception as exc:
        error = classify_db_error(exc, "api")
        if isinstance(error, TransientError):
            if error.cause.outage:  # logged once per outage, not per request
                reachability.POSTGRESQL.failed(str(error))
            raise error from exc
        raise PermanentError(str(error)) from exc
    reachability.POSTGRESQL.succeeded()
    return answer
