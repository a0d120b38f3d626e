"""The apply / supersede / precondition / deletion decision: table-driven, then against
the reference model (tests/helpers/model.py) over generated histories of moves and deletions."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.model import Model
from tests.helpers.strategies import BASE, digest, histories, make_deletion, make_event
from worker.decision import Applied, Rejected, TagRecord, decide, fold
from worker.events import TagEvent, TagMoved
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


@pytest.mark.parametrize(
    ("stored", "previous", "expected", "detail"),
    [
        (
            record(version=1),
            None,
            7,
            "docker.io/library/app:v1 is at version 1, not at 7 (expected_version)",
        ),
        (
            None,
            None,
            2,
            "docker.io/library/app:v1 is at version 0, not at 2 (expected_version)",
        ),
        (
            record(),
            digest(9),
            None,
            f"docker.io/library/app:v1 points at {digest(1)}, not at {digest(9)} "
            "(previous_artifact)",
        ),
        (
            None,
            digest(9),
            None,
            "docker.io/library/app:v1 points at nothing (no live record), not at "
            f"{digest(9)} (previous_artifact)",
        ),
    ],
)
def test_a_failed_precondition_says_what_was_expected(
    stored: TagRecord | None, previous: str | None, expected: int | None, detail: str
) -> None:
    """The detail names both sides: what the record holds and what the event expected."""
    decision = decide(
        stored,
        make_event("v1", digest(5), T2, previous_artifact=previous, expected_version=expected),
    )
    assert isinstance(decision, Rejected)
    assert decision.problem.detail == detail
    assert [item.message for item in decision.problem.errors] == [detail]


def test_superseded_wins_over_a_failing_precondition() -> None:
    decision = decide(record(version=3), make_event("v1", digest(5), T0, expected_version=1))
    assert isinstance(decision, Rejected) and decision.problem.kind is ProblemKind.SUPERSEDED


def _unique(events: list[TagEvent]) -> list[TagEvent]:
    """Decision works on first deliveries: duplicates and id reuses are the store's."""
    seen: set[tuple[str, str]] = set()
    out = []
    for e in events:
        if (e.source, e.id) not in seen:
            seen.add((e.source, e.id))
            out.append(e)
    return out


@given(histories())
def test_fold_matches_the_reference_model(events: list[TagEvent]) -> None:
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
                shown = decision.removed or decision.record
                assert (200, decision.change, decision.record.version, shown.artifact) == (
                    expected[i].status,
                    expected[i].change,
                    expected[i].version,
                    expected[i].artifact,
                )
            else:
                assert decision.problem.status == expected[i].status
        row = model.rows.get(("docker.io/library/app", tag))
        assert (final is None) == (row is None)
        if final is not None and row is not None:
            assert (
                final.artifact,
                final.version,
                final.created_by,
                final.created_on,
                final.last_modified_on,
                final.last_modified_by,
                final.deleted_on,
                final.deleted_by,
            ) == (
                row.artifact,
                row.version,
                row.created_by,
                row.created_on,
                row.last_modified_on,
                row.last_modified_by,
                row.deleted_on,
                row.deleted_by,
            )


@given(histories(), st.randoms())
def test_without_preconditions_the_greatest_key_wins_in_any_order(
    events: list[TagEvent], rng: random.Random
) -> None:
    """Convergence: live at the greatest move's artifact, or deleted by the greatest
    deletion, last modified by that event, whatever the order."""
    events = [e for e in _unique(events) if not e.has_preconditions]
    shuffled = list(events)
    rng.shuffle(shuffled)
    for tag in {e.tag for e in events}:
        mine = [e for e in shuffled if e.tag == tag]
        final, _ = fold(None, mine)
        best = max(mine, key=lambda e: e.order_key)
        assert final is not None
        assert (final.last_modified_on, final.last_modified_by) == (best.time, best.actor)
        if isinstance(best, TagMoved):
            assert final.live and final.artifact == best.artifact
        else:
            assert (final.deleted_on, final.deleted_by) == (best.time, best.actor)


# ---- deletions


def tombstone(version: int = 2, when: datetime = T1, event_id: str = "d") -> TagRecord:
    return replace(
        record(version=version, when=when, event_id=event_id), deleted_on=when, deleted_by="bob"
    )


def test_deleting_a_live_tag_keeps_a_tombstone_and_shows_the_record_as_it_was() -> None:
    live = record(version=3)
    decision = decide(live, make_deletion("v1", T2, actor="carol", event_id="del"))
    assert isinstance(decision, Applied)
    assert (decision.change, decision.removed) == ("deleted", live)
    t = decision.record
    assert not t.live and (t.deleted_on, t.deleted_by) == (T2, "carol")
    assert (t.version, t.artifact, t.created_by, t.created_on) == (4, live.artifact, "alice", T0)
    assert (t.last_modified_on, t.last_modified_by, t.last_event_id) == (T2, "carol", "del")


@pytest.mark.parametrize(
    ("stored", "version", "artifact"),
    [(None, 0, None), (tombstone(version=2, when=T0), 2, digest(1))],
    ids=["never seen: tombstone at version 0", "already deleted: version kept"],
)
def test_deleting_a_tag_that_is_not_live_is_404_and_records_the_key(
    stored: TagRecord | None, version: int, artifact: str | None
) -> None:
    decision = decide(stored, make_deletion("v1", T2, actor="carol", source="s", event_id="del"))
    assert isinstance(decision, Rejected) and decision.problem.kind is ProblemKind.NOT_FOUND
    assert decision.problem.status == 404 and decision.problem.errors == ()
    t = decision.record
    assert t is not None and not t.live
    assert (t.version, t.artifact, t.order_key) == (version, artifact, (T2, "s", "del"))
    assert (t.deleted_on, t.deleted_by, t.last_modified_by) == (T2, "carol", "carol")
    # the recorded key keeps an older move out
    late = decide(t, make_event("v1", digest(7), T1))
    assert isinstance(late, Rejected) and late.problem.kind is ProblemKind.SUPERSEDED


@pytest.mark.parametrize("stored", [record(when=T2), tombstone(when=T2)], ids=["live", "tombstone"])
def test_an_older_deletion_is_superseded_whatever_the_state(stored: TagRecord) -> None:
    decision = decide(stored, make_deletion("v1", T1))
    assert isinstance(decision, Rejected) and decision.problem.kind is ProblemKind.SUPERSEDED
    assert decision.record is None


def test_a_newer_move_brings_the_tag_back_counting_the_version_on() -> None:
    decision = decide(tombstone(version=4, when=T1), make_event("v1", digest(9), T2, actor="dan"))
    assert isinstance(decision, Applied) and decision.change == "created"
    r = decision.record
    assert r.live and (r.version, r.artifact) == (5, digest(9))
    assert (r.created_by, r.created_on, r.last_modified_by, r.last_modified_on) == (
        "dan",
        T2,
        "dan",
        T2,
    )


def test_an_older_move_than_the_tombstone_is_superseded() -> None:
    decision = decide(tombstone(when=T2), make_event("v1", digest(9), T1))
    assert isinstance(decision, Rejected) and decision.problem.kind is ProblemKind.SUPERSEDED
    assert "deleted by a newer event" in decision.problem.detail


@pytest.mark.parametrize(
    ("stored", "event", "outcome", "locations"),
    [
        # a deleted tag does not exist: expected_version 0 holds, previous_artifact fails
        (tombstone(version=3), make_event("v1", digest(5), T2, expected_version=0), 200, []),
        (
            tombstone(version=3),
            make_event("v1", digest(5), T2, expected_version=3),
            412,
            ["body.data.expected_version"],
        ),
        (
            tombstone(version=3),
            make_event("v1", digest(5), T2, previous_artifact=digest(1)),
            412,
            ["body.data.previous_artifact"],
        ),
        # a deletion of a live tag checks them like a move
        (record(version=3), make_deletion("v1", T2, expected_version=3), 200, []),
        (record(version=3), make_deletion("v1", T2, previous_artifact=digest(1)), 200, []),
        (
            record(version=3),
            make_deletion("v1", T2, expected_version=2, previous_artifact=digest(2)),
            412,
            ["body.data.previous_artifact", "body.data.expected_version"],
        ),
        # a deletion that finds nothing live is 404 before any precondition
        (tombstone(version=3), make_deletion("v1", T2, expected_version=3), 404, []),
        (None, make_deletion("v1", T2, previous_artifact=digest(1)), 404, []),
    ],
)
def test_preconditions_with_deletions(
    stored: TagRecord | None, event: TagEvent, outcome: int, locations: list[str]
) -> None:
    decision = decide(stored, event)
    if isinstance(decision, Applied):
        assert outcome == 200
    else:
        assert decision.problem.status == outcome
        assert [i.location for i in decision.problem.errors] == locations
        if outcome == 412:
            assert decision.record is None  # a failed precondition records nothing


def test_a_tombstone_of_a_never_seen_tag_has_no_ocitag() -> None:
    decision = decide(None, make_deletion("v1", T1))
    assert isinstance(decision, Rejected) and decision.record is not None
    with pytest.raises(ValueError, match="never been live"):
        decision.record.as_ocitag()


@given(histories(), st.randoms())
def test_versions_never_go_back(events: list[TagEvent], rng: random.Random) -> None:
    events = _unique(events)
    rng.shuffle(events)
    for tag in {e.tag for e in events}:
        current: TagRecord | None = None
        for e in (e for e in events if e.tag == tag):
            decision = decide(current, e)
            recorded = decision.recorded
            if recorded is not None:
                assert recorded.version >= (current.version if current else 0)
                assert recorded.version == (current.version if current else 0) + (
                    1 if isinstance(decision, Applied) else 0
                )
                current = recorded


def test_binary_events_point_problems_at_headers_and_body() -> None:
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
