"""The one retry policy: full-jitter capped exponential backoff, defined for every
attempt number (hours of outage must not overflow it), and the loop every caller uses."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import Cause, FatalError, PermanentError, TransientError
from worker.metrics import DB_RETRIES, KAFKA_RETRIES
from worker.retry import Backoff, backoff_delay, retrying


@pytest.mark.parametrize(
    "attempt", [0, 1, 10, 63, 64, 1023, 1024, 1025, 10_000, 1_000_000, 10**7, 10**18]
)
def test_any_attempt_number_gives_a_delay_within_the_cap(attempt: int) -> None:
    delay = backoff_delay(attempt, 0.1, 30.0)
    assert 0.0 <= delay <= 30.0


def test_attempts_in_the_millions_never_raise() -> None:
    backoff = Backoff(0.1, 30.0)
    backoff.attempt = 10**7 - 1000
    delays = [backoff.next_delay() for _ in range(1000)]
    assert backoff.attempt == 10**7
    assert all(0.0 <= d <= 30.0 for d in delays)
    assert max(delays) > 15.0  # at the cap, the draw spans all of [0, cap]


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    """Full jitter: uniform(0, ceiling), not equal jitter's uniform(ceiling/2, ceiling)."""
    rng = random.Random(7)
    draws = [backoff_delay(3, 0.1, 30.0, rng) for _ in range(5000)]  # ceiling 0.8
    assert min(draws) >= 0.0 and max(draws) <= 0.8
    assert min(draws) < 0.01  # reaches near zero: not equal jitter
    assert max(draws) > 0.79
    assert sum(d < 0.4 for d in draws) > 2000  # about half below ceiling/2
    assert 0.37 < sum(draws) / len(draws) < 0.43  # mean ceiling/2


def test_the_ceiling_doubles_until_the_cap() -> None:
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (50, 1.0)]:
        rng = random.Random(1)
        rng_max = random.Random(1)
        rng_max.uniform = lambda a, b: b  # type: ignore[method-assign]
        assert backoff_delay(attempt, 0.1, 1.0, rng_max) == pytest.approx(ceiling)
        assert backoff_delay(attempt, 0.1, 1.0, rng) <= ceiling


@given(
    initial=st.floats(min_value=1e-6, max_value=1e6),
    cap=st.floats(min_value=0.0, max_value=1e6),
    attempt=st.integers(min_value=-10, max_value=10**30),
)
def test_backoff_is_total_and_bounded(initial: float, cap: float, attempt: int) -> None:
    delay = backoff_delay(attempt, initial, cap)
    assert 0.0 <= delay <= cap


def test_every_cause_is_in_its_counters_help_text() -> None:
    for cause in Cause:
        counter = DB_RETRIES if cause.service == "db" else KAFKA_RETRIES
        assert cause.value in counter._documentation


async def test_the_loop_retries_transient_faults_and_counts_them() -> None:
    calls: list[int] = []
    reported: list[tuple[Cause, int]] = []
    waited: list[float] = []

    async def work() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise OSError("reset")
        return "done"

    def classify(exc: BaseException) -> BaseException:
        return TransientError(Cause.DB_CONNECTION, str(exc))

    async def wait(delay: float) -> None:
        waited.append(delay)

    before = DB_RETRIES.labels(cause="db_connection")._value.get()
    result = await retrying(
        work,
        Backoff(0.01, 0.02),
        classify=classify,
        wait=wait,
        on_retry=lambda e, n, d: reported.append((e.cause, n)),
    )
    assert result == "done" and len(calls) == 4
    assert reported == [
        (Cause.DB_CONNECTION, 1),
        (Cause.DB_CONNECTION, 2),
        (Cause.DB_CONNECTION, 3),
    ]
    assert len(waited) == 3 and all(0 <= d <= 0.02 for d in waited)
    assert DB_RETRIES.labels(cause="db_connection")._value.get() == before + 3


@pytest.mark.parametrize("error", [PermanentError("one event"), FatalError("stop")])
async def test_the_loop_raises_what_is_not_transient_at_once(error: Exception) -> None:
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        await retrying(work, Backoff(0.01, 0.02))
    assert calls == 1


async def test_the_loop_stops_after_the_attempts_and_only_retries_its_causes() -> None:
    calls = 0

    async def conflict() -> None:
        nonlocal calls
        calls += 1
        raise TransientError(Cause.DB_CONFLICT)

    async def no_wait(delay: float) -> None:
        return None

    with pytest.raises(TransientError):
        await retrying(
            conflict, Backoff(0.01, 0.02), causes={Cause.DB_CONFLICT}, attempts=5, wait=no_wait
        )
    assert calls == 5

    calls = 0

    async def away() -> None:
        nonlocal calls
        calls += 1
        raise TransientError(Cause.DB_CONNECTION)

    with pytest.raises(TransientError):
        await retrying(away, Backoff(0.01, 0.02), causes={Cause.DB_CONFLICT}, wait=no_wait)
    assert calls == 1  # not this loop's cause: up to the caller's retry


async def test_the_loop_chains_the_classified_error_to_the_original() -> None:
    async def work() -> None:
        raise ValueError("driver")

    with pytest.raises(FatalError) as caught:
        await retrying(work, Backoff(0.01, 0.02), classify=lambda e: FatalError("mapped"))
    assert isinstance(caught.value.__cause__, ValueError)
