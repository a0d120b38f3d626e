"""The apply / supersede / precondition decision: table-driven, then against the
reference model (tests/model.py) over generated histories."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.model import Model
from tests.helpers.strategies import BASE, digest, histories, make_event
from worker.decision import Applied, Rejected, TagRecord, decide, fold
from worker.events import TagMoved
from worker.problems import ProblemKind

T0, T1, T2 = BASE, BASE + timedelta(seconds=1), BASE + timedelta(seconds=2)


def record(
    artifact: str = digest(1),
    version: int = 1,
    when: datetime = T1,
    source: str = "s",
    event_id: str = "m",
) -> TagRecord:
    return TagRecord(
        "docker.io/library/app", "v1", artifact, "alice", T0, "bob", when, version, source, event_id
    )


def test_first_event_creates_version_1() -> None:
    decision = decide(None, make_event("v1", digest(1), T0, actor="alice"))
    assert isinstance(decision, Applied)
    assert decision.change == "created"
    r = decision.record
    assert (
        r.version,
        r.artifact,
        r.created_by,
        r.created_on,
        r.last_modified_by,
        r.last_modified_on,
    ) == (1, digest(1), "alice", T0, "alice", T0)


@pytest.mark.parametrize(("artifact", "change"), [(digest(2), "updated"), (digest(1), "unchanged")])
def test_newer_event_updates_and_counts_the_version(artifact: str, change: str) -> None:
    decision = decide(record(), make_event("v1", artifact, T2, actor="carol"))
    assert isinstance(decision, Applied)
    assert decision.change == change
    assert decision.record.version == 2
    assert decision.record.last_modified_by == "carol" and decision.record.last_modified_on == T2
    assert decision.record.created_by == "alice" and decision.record.created_on == T0


@pytest.mark.parametrize(
    "event",
    [
        make_event("v1", digest(2), T0),  # older
        make_event("v1", digest(2), T1, source="s", event_id="a"),  # same time, smaller id
        make_event("v1", digest(2), T1, source="r", event_id="z"),  # same time, smaller source
    ],
)
def test_older_or_equal_key_is_superseded(event: TagMoved) -> None:
    decision = decide(record(when=T1, source="s", event_id="m"), event)
    assert isinstance(decision, Rejected)
    assert decision.problem.kind is ProblemKind.SUPERSEDED
    assert decision.problem.errors[0].location == "body.time"


def test_same_time_greater_source_or_id_applies() -> None:
    assert isinstance(
        decide(record(), make_event("v1", digest(2), T1, source="s", event_id="n")), Applied
    )
    assert isinstance(
        decide(record(), make_event("v1", digest(2), T1, source="t", event_id="a")), Applied
    )


@pytest.mark.parametrize(
    ("stored", "previous", "expected", "ok", "locations"),
    [
        (None, None, 0, True, []),
        (None, None, 1, False, ["body.data.expected_version"]),
        (None, digest(1), None, False, ["body.data.previous_artifact"]),
        (record(), digest(1), None, True, []),
        (record(), digest(9), None, False, ["body.data.previous_artifact"]),
        (record(version=3), None, 3, True, []),
        (record(version=3), None, 2, False, ["body.data.expected_version"]),
        (
            record(version=3),
            digest(9),
            2,
            False,
            ["body.data.previous_artifact", "body.data.expected_version"],
        ),
    ],
)
def test_preconditions(
    stored: TagRecord | None,
    previous: str | None,
    expected: int | None,
    ok: bool,
    locations: list[str],
) -> None:
    decision = decide(
        stored,
        make_event("v1", digest(5), T2, previous_artifact=previous, expected_version=expected),
    )
    assert isinstance(decision, Applied) is ok
    if not ok:
        assert isinstance(decision, Rejected)
        assert decision.problem.kind is ProblemKind.PRECONDITION_FAILED
        assert [i.location for i in decision.problem.errors] == locations


def test_superseded_wins_over_a_failing_precondition() -> None:
    decision = decide(record(version=3), make_event("v1", digest(5), T0, expected_version=1))
    assert isinstance(decision, Rejected) and decision.problem.kind is ProblemKind.SUPERSEDED


def _unique(events: list[TagMoved]) -> list[TagMoved]:
    """Decision works on first deliveries: duplicates and id reuses are the store's."""
    seen: set[tuple[str, str]] = set()
    out = []
    for e in events:
        if (e.source, e.id) not in seen:
            seen.add((e.source, e.id))
            out.append(e)
    return out


@given(histories())
def test_fold_matches_the_reference_model(events: list[TagMoved]) -> None:
    events = _unique(events)
    model = Model()
    expected = [model.deliver(e) for e in events]
    by_tag: dict[str, list[int]] = {}
    for i, e in enumerate(events):
        by_tag.setdefault(e.tag, []).append(i)
    for tag, indexes in by_tag.items():
        final, decisions = fold(None, [events[i] for i in indexes])
        for i, decision in zip(indexes, decisions, strict=True):
            if isinstance(decision, Applied):
                assert (200, decision.change, decision.record.version) == (
                    expected[i].status,
                    expected[i].change,
                    expected[i].version,
                )
            else:
                assert decision.problem.status == expected[i].status
        row = model.rows.get(("docker.io/library/app", tag))
        assert (final is None) == (row is None)
        if final is not None and row is not None:
            assert (
                final.artifact,
                final.version,
                final.last_modified_on,
                final.last_modified_by,
            ) == (row.artifact, row.version, row.last_modified_on, row.last_modified_by)


@given(histories(), st.randoms())
def test_without_preconditions_the_greatest_key_wins_in_any_order(
    events: list[TagMoved], rng: random.Random
) -> None:
    events = [e for e in _unique(events) if not e.has_preconditions]
    shuffled = list(events)
    rng.shuffle(shuffled)
    for tag in {e.tag for e in events}:
        mine = [e for e in shuffled if e.tag == tag]
        final, _ = fold(None, mine)
        best = max(mine, key=lambda e: e.order_key)
        assert final is not None
        assert (final.artifact, final.last_modified_on, final.last_modified_by) == (
            best.artifact,
            best.time,
            best.actor,
        )


def test_binary_events_point_problems_at_headers_and_body() -> None:
    from dataclasses import replace

    late = replace(make_event("v1", digest(2), T0), binary=True)
    decision = decide(record(), late)
    assert (
        isinstance(decision, Rejected) and decision.problem.errors[0].location == "headers.ce_time"
    )
    conditional = replace(make_event("v1", digest(2), T2, expected_version=9), binary=True)
    decision = decide(record(), conditional)
    assert (
        isinstance(decision, Rejected)
        and decision.problem.errors[0].location == "body.expected_version"
    )
