"""The per-caller token bucket, on a clock the test holds: a burst of ``requests`` passes,
the next waits ``Retry-After``, the rate over any window never exceeds the limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.api.access import access_from_settings
from worker.api.ratelimit import RateLimit, RateLimiter, parse_rate_limit, retry_after
from worker.errors import SettingsError
from worker.settings import load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("raw", "limit"),
    [("200/1", RateLimit(200, 1.0)), ("5/60", RateLimit(5, 60.0)), ("0", RateLimit(0, 1.0))],
)
def test_parse(raw: str, limit: RateLimit) -> None:
    assert parse_rate_limit(raw) == limit


@pytest.mark.parametrize("raw", ["", "200", "0/1", "1/0", "-1/1", "a/b", "1/1/1"])
def test_parse_refuses(raw: str) -> None:
    with pytest.raises(ValueError, match="<requests>/<seconds>"):
        parse_rate_limit(raw)


def test_a_burst_then_the_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(3, 1.0), clock)
    assert [limiter.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait("a") == pytest.approx(1 / 3)
    assert limiter.wait("b") == 0.0  # each caller its own bucket
    clock.now += 1 / 3
    assert limiter.wait("a") == 0.0
    assert retry_after(0.01) == 1 and retry_after(1.2) == 2


def test_zero_turns_it_off() -> None:
    limiter = RateLimiter(parse_rate_limit("0"), Clock())
    assert all(limiter.wait("a") == 0.0 for _ in range(10_000))


@given(
    st.integers(1, 20),
    st.floats(0.1, 10),
    st.lists(st.floats(0, 0.5), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    requests: int, seconds: float, gaps: list[float]
) -> None:
    clock = Clock()
    limit = RateLimit(requests, seconds)
    limiter = RateLimiter(limit, clock)
    start = clock.now
    allowed = 0
    for gap in gaps:
        clock.now += gap
        wait = limiter.wait("c")
        if wait == 0.0:
            allowed += 1
        else:
            assert 0 < wait <= seconds / requests + 1e-9
    assert allowed <= requests + (clock.now - start) * limit.per_second + 1e-6


@given(st.integers(1, 20), st.floats(0.1, 10))
def test_waiting_the_answer_is_enough(requests: int, seconds: float) -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(requests, seconds), clock)
    while (wait := limiter.wait("c")) == 0.0:
        pass
    clock.now += wait
    assert limiter.wait("c") == 0.0


def test_a_zero_period_the_setting_lets_through_stops_start_up_naming_it() -> None:
    """``5/0`` passes the setting's pattern; the api's start-up names the setting (exit
    2), never a traceback."""
    settings = load_settings({"api_rate_limit": "5/0"}, environ={})
    with pytest.raises(SettingsError, match="OCITAG_API_RATE_LIMIT"):
        access_from_settings(settings, lambda: 0.0)
