"""The first-arrival memory of payloads without a time (worker/ingest/arrivals.py), and
which kinds use it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.ingest import fixture_names, load_delivery
from worker.ingest.arrivals import Arrivals
from worker.ingest.kinds import ARRIVAL_TIMED, KINDS
from worker.ingest.mapping import RECEIVED_AT_HEADER, REGISTRY_HEADER, MappingError, TagChange

T0 = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        # (kind, body, minutes after T0) → minutes after T0 answered
        ([("quay", b"a", 0), ("quay", b"a", 5)], [0, 0]),
        ([("quay", b"a", 0), ("quay", b"a", 60)], [0, 0]),  # an hour is still remembered
        ([("quay", b"a", 0), ("quay", b"a", 61), ("quay", b"a", 62)], [0, 61, 61]),
        ([("quay", b"a", 0), ("quay", b"b", 5), ("quay", b"a", 6)], [0, 5, 0]),
        ([("quay", b"a", 0), ("artifactory", b"a", 5)], [0, 5]),  # per kind
        ([("quay", b"a", 10), ("quay", b"a", 4)], [10, 10]),  # the clock set back
    ],
)
def test_a_body_keeps_its_first_arrival_for_an_hour(
    calls: list[tuple[str, bytes, int]], expected: list[int]
) -> None:
    arrivals = Arrivals()
    answered = [arrivals.first(kind, body, T0 + m * MINUTE) for kind, body, m in calls]
    assert answered == [T0 + m * MINUTE for m in expected]


def test_when_full_the_oldest_body_is_forgotten() -> None:
    arrivals = Arrivals(max_bodies=2)
    for index, body in enumerate([b"a", b"b", b"c"]):
        arrivals.first("quay", body, T0 + index * MINUTE)
    assert len(arrivals) == 2
    assert arrivals.first("quay", b"c", T0 + 9 * MINUTE) == T0 + 2 * MINUTE
    assert arrivals.first("quay", b"a", T0 + 9 * MINUTE) == T0 + 9 * MINUTE


@given(
    st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]), st.integers(0, 30)), max_size=60)
)
def test_answers_are_first_arrivals_within_the_window_and_memory_is_bounded(
    steps: list[tuple[bytes, int]],
) -> None:
    arrivals = Arrivals(max_age=timedelta(minutes=45), max_bodies=3)
    now = T0
    for body, advance in steps:
        now += advance * MINUTE
        answer = arrivals.first("quay", body, now)
        assert now - timedelta(minutes=45) <= answer <= now
        assert arrivals.first("quay", body, now) == answer  # asked again: the same
        assert len(arrivals) <= 3


def _event_times(kind: str, name: str, received: str) -> list[datetime]:
    body, headers = load_delivery(kind, name)
    headers = {**headers, RECEIVED_AT_HEADER: received, REGISTRY_HEADER: "registry.example"}
    try:
        mapped = KINDS[kind].map_delivery(body, headers)
    except MappingError:
        return []
    return [entry.time for entry in mapped if isinstance(entry, TagChange)]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_kinds_whose_events_take_the_arrival_time_are_the_remembered_ones(
    kind: str,
) -> None:
    takes_arrival = any(
        _event_times(kind, name, "2026-01-01T00:00:00Z")
        != _event_times(kind, name, "2026-06-01T00:00:00Z")
        for name in fixture_names(kind)
    )
    assert takes_arrival == (kind in ARRIVAL_TIMED)
    assert KINDS[kind].arrival_timed == (kind in ARRIVAL_TIMED)
