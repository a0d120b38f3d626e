"""Telling commits stalled on a missing synchronous standby apart from an outage
(worker/syncrep.py): the pure diagnosis, table-driven and with hypothesis, and the
watch's gauge and lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from worker import metrics
from worker.syncrep import SyncRepState, SyncRepWatch, diagnose


@pytest.mark.parametrize(
    ("state", "stalled"),
    [
        (SyncRepState("", 0, 0), False),  # asynchronous (or no standby): never waits
        (SyncRepState("", 0, 3), False),  # waits without a setting: not this
        (SyncRepState("FIRST 1 (s1)", 1, 2), False),  # a slow standby, connected
        (SyncRepState("FIRST 1 (s1)", 0, 2), True),  # the promoted primary's case
        (SyncRepState("s1", 0, 0), True),  # stalled between two retries
        (SyncRepState("FIRST 1 (s1)", 0, 0, 1), False),  # a standby this role cannot read
        (SyncRepState("FIRST 1 (s1)", 0, 2, 1), False),  # unknown is not a stall
        (SyncRepState("  ", 0, 1), False),
    ],
)
def test_diagnosis(state: SyncRepState, stalled: bool) -> None:
    said = diagnose(state)
    assert (said is not None) is stalled
    if said is not None:
        assert state.names in said and "synchronous_standby_names = ''" in said


@given(st.text(max_size=20), st.integers(0, 5), st.integers(0, 50))
def test_stalled_exactly_when_a_standby_is_listed_and_none_connected(
    names: str, connected: int, waiting: int
) -> None:
    stalled = diagnose(SyncRepState(names, connected, waiting)) is not None
    assert stalled == (bool(names.strip()) and connected == 0)


def gauge() -> float:
    registry = metrics.registry("run")
    line = next(
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("ocitag_db_sync_replication_stalled ")
    )
    return float(line.split()[1])


def test_the_watch_says_it_once_and_when_it_clears() -> None:
    watch = SyncRepWatch()
    stalled, clear = SyncRepState("FIRST 1 (s1)", 0, 1), SyncRepState("", 0, 0)
    with capture_logs() as lines:
        assert watch.saw(stalled) is not None
        assert gauge() == 1
        watch.saw(stalled)
        assert watch.saw(clear) is None
        assert gauge() == 0
    assert [line["event"] for line in lines] == [
        "sync_replication_stalled",
        "sync_replication_resumed",
    ]
    assert lines[0]["waiting_sessions"] == 1
    watch.saw(stalled)
    watch.clear()
    assert gauge() == 0
