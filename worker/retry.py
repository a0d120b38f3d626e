"""The one retry policy: capped exponential backoff with full jitter, and the one loop
that redoes work while it fails transiently. The store (a transaction that lost a
serialisation conflict), the pipeline (a batch waiting for a service, the poll loop
waiting for the broker) and start-up (waiting for PostgreSQL and Kafka) all use it; the
causes it counts are the fixed set of ``Cause``.

Written here rather than taken from tenacity or backoff: the waits must end early when
a partition is revoked or the worker is stopping (an event, not a sleep), the errors
come from two drivers and are classified first, and the policy itself is three lines.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from worker import metrics, reachability
from worker.errors import Cause, TransientError

__all__ = ["Backoff", "Cause", "backoff_delay", "retry_failed", "retrying"]

T = TypeVar("T")

# 2**60 times any sane initial delay is far past any cap; a larger exponent only risks
# OverflowError (float range ends near 2**1024), which hours of outage would reach.
_MAX_EXPONENT = 60


def backoff_delay(
    attempt: int, initial: float, cap: float, rng: random.Random | None = None
) -> float:
    """The wait before retry number ``attempt`` (0 for the first retry): full jitter,
    uniform in [0, min(cap, initial · 2^attempt)]. Defined for every attempt number,
    however large; never negative, never above ``cap``."""
    exponent = min(max(attempt, 0), _MAX_EXPONENT)
    ceiling = max(0.0, min(cap, initial * 2.0**exponent))
    return (rng or random).uniform(0.0, ceiling)  # jitter, not crypto


class Backoff:
    """The policy's state for one run of retries: how many have been waited for."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self.attempt = 0
        self._rng = rng

    def next_delay(self) -> float:
        delay = backoff_delay(self.attempt, self.initial, self.cap, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def count_retry(cause: Cause, amount: int = 1) -> None:
    """Count redone work in the service's retry counter."""
    counter = metrics.DB_RETRIES if cause.service == "db" else metrics.KAFKA_RETRIES
    counter.labels(cause=cause.value).inc(amount)


def retry_failed(error: TransientError) -> bool:
    """Count work to redo; when its service is away, tell that service's outage tracker
    (worker/reachability.py), which logs the outage. True then: the caller logs no line
    of its own for this attempt."""
    count_retry(error.cause)
    if error.cause.outage:
        reachability.of(error.service).failed(str(error))
    return error.cause.outage


def _as_is(exc: BaseException) -> BaseException:
    return exc


async def retrying(
    work: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    classify: Callable[[BaseException], BaseException] = _as_is,
    causes: Collection[Cause] | None = None,
    attempts: int | None = None,
    wait: Callable[[float], Awaitable[object]] = asyncio.sleep,
    on_retry: Callable[[TransientError, int, float], None] | None = None,
) -> T:
    """Run ``work`` until it succeeds. A failure is first classified (a driver's error
    into the worker's tree); a ``TransientError`` of one of ``causes`` (any cause when
    None) is counted, reported to ``on_retry(error, attempt, delay)`` (which may raise to
    stop, e.g. past a deadline), waited for with ``wait(delay)`` (which may raise to give
    up, e.g. on revocation) and retried, at most ``attempts`` times in all when given.
    Anything else is raised, the classified error chained to the original. A service
    that was away and now did its part is reported back (worker/reachability.py)."""
    away: set[str] = set()
    while True:
        try:
            result = await work()
        except Exception as exc:
            error = classify(exc)
            retry = isinstance(error, TransientError) and (causes is None or error.cause in causes)
            if not retry or (attempts is not None and backoff.attempt + 1 >= attempts):
                if error is exc:
                    raise
                raise error from exc
            assert isinstance(error, TransientError)
            delay = backoff.next_delay()
            if retry_failed(error):
                away.add(error.service)
            if on_retry is not None:
                on_retry(error, backoff.attempt, delay)
            await wait(delay)
        else:
            for service in away:
                reachability.of(service).succeeded()
            return result
