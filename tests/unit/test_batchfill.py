"""The wait for more records after a small fetch (worker/batchfill.py): when, how long,
and the arrival rate it is decided from. Pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.batchfill import FILL_RECORDS, ArrivalRate, fill_wait


@pytest.mark.parametrize(
    ("fetched", "rate", "limit", "expected"),
    [
        (0, 2_000.0, 0.010, 0.0),  # nothing fetched: nothing to hold
        (8, 2_000.0, 0.0, 0.0),  # turned off
        (FILL_RECORDS, 20_000.0, 0.010, 0.0),  # large enough already
        (500, 20_000.0, 0.010, 0.0),
        (1, 50.0, 0.010, 0.0),  # 0.5 more expected within the bound: not worth it
        (1, 99.0, 0.010, 0.0),
        (1, 100.0, 0.010, 0.010),  # one more expected: the whole bound
        (8, 2_000.0, 0.010, 0.010),  # the bound binds: 56 more would take 28 ms
        (60, 2_000.0, 0.010, 0.002),  # 4 more take 2 ms
        (32, 16_000.0, 0.010, 0.002),
        (8, 0.0, 0.010, 0.0),  # no rate known yet
    ],
)
def test_fill_wait(fetched: int, rate: float, limit: float, expected: float) -> None:
    assert fill_wait(fetched, rate, limit) == pytest.approx(expected)


def test_the_target_is_the_callers() -> None:
    assert fill_wait(8, 2_000.0, 0.010, target=8) == 0.0
    assert fill_wait(7, 2_000.0, 0.010, target=8) == pytest.approx(0.0005)


@given(
    fetched=st.integers(0, 5_000),
    rate=st.floats(0, 1e6, allow_nan=False),
    limit=st.floats(0, 1.0, allow_nan=False),
    target=st.integers(1, 5_000),
)
def test_the_wait_is_bounded_and_only_for_small_fetches(
    fetched: int, rate: float, limit: float, target: int
) -> None:
    wait = fill_wait(fetched, rate, limit, target)
    assert 0.0 <= wait <= limit
    if wait > 0:
        assert 0 < fetched < target
        assert rate * limit >= 1.0


def test_a_steady_rate_reads_as_itself() -> None:
    arrivals = ArrivalRate()
    for step in range(2_500):  # 8 records every 4 ms: 2,000 a second, for 10 s
        arrivals.observe(8, step * 0.004)
    assert arrivals.rate(10.0) == pytest.approx(2_000, rel=0.01)


def test_a_burst_fades() -> None:
    arrivals = ArrivalRate()
    arrivals.observe(10_000, 0.0)
    assert arrivals.rate(0.0) == pytest.approx(10_000)
    assert arrivals.rate(5.0) < 70  # e^-5 of it
    assert ArrivalRate().rate(1.0) == 0.0  # nothing observed yet


@given(st.lists(st.tuples(st.integers(0, 1_000), st.floats(0, 10)), max_size=50))
def test_the_rate_is_never_negative_and_decays_between_fetches(
    fetches: list[tuple[int, float]],
) -> None:
    arrivals, now = ArrivalRate(), 0.0
    for records, gap in fetches:
        now += gap
        arrivals.observe(records, now)
    assert arrivals.rate(now) >= 0.0
    assert arrivals.rate(now + 1.0) <= arrivals.rate(now)
