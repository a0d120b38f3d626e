"""The pure diff: table-driven cases and properties (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.reconcile.diff import (
    Difference,
    LiveRecord,
    Observation,
    diff_repository,
)

REPO = "r.example/team/app"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
EARLIER = T0 - timedelta(hours=1)
LATER = T0 + timedelta(seconds=1)
A, B = "a" * 64, "b" * 64


def seen(digest: str | None, at: datetime = T0) -> Observation:
    return Observation(digest, at)


def live(artifact: str, at: datetime = EARLIER) -> LiveRecord:
    return LiveRecord(artifact, at)


@pytest.mark.parametrize(
    ("observed", "records", "expected", "agreed", "newer"),
    [
        pytest.param({}, {}, [], 0, 0, id="nothing anywhere"),
        pytest.param({"v1": seen(A)}, {"v1": live(A)}, [], 1, 0, id="agrees"),
        pytest.param(
            {"v1": seen(A)},
            {},
            [Difference("moved", REPO, "v1", A, None, T0)],
            0,
            0,
            id="missing record",
        ),
        pytest.param(
            {"v1": seen(B)},
            {"v1": live(A)},
            [Difference("moved", REPO, "v1", B, A, T0)],
            0,
            0,
            id="points elsewhere",
        ),
        pytest.param(
            {},
            {"v1": live(A)},
            [Difference("deleted", REPO, "v1", None, A, EARLIER + timedelta(minutes=30))],
            0,
            0,
            id="tag gone: observed when the listing began",
        ),
        pytest.param(
            {"v1": seen(None)},
            {"v1": live(A)},
            [Difference("deleted", REPO, "v1", None, A, T0)],
            0,
            0,
            id="tag vanished between listing and HEAD",
        ),
        pytest.param({"v1": seen(None)}, {}, [], 0, 0, id="vanished and no record"),
        pytest.param(
            {"v1": seen(B)},
            {"v1": live(A, at=LATER)},
            [],
            0,
            1,
            id="record newer than the observation",
        ),
        pytest.param(
            {"v1": seen(B)}, {"v1": live(A, at=T0)}, [], 0, 1, id="record as new as the observation"
        ),
        pytest.param(
            {}, {"v1": live(A, at=LATER)}, [], 0, 1, id="record created after the listing began"
        ),
    ],
)
def test_diff_table(
    observed: dict[str, Observation],
    records: dict[str, LiveRecord],
    expected: list[Difference],
    agreed: int,
    newer: int,
) -> None:
    result = diff_repository(REPO, observed, records, EARLIER + timedelta(minutes=30))
    assert list(result.differences) == expected
    assert (result.agreed, result.newer) == (agreed, newer)
    assert sum(result.counts.values()) == len(expected)


TAGS = st.sampled_from([f"t{i}" for i in range(8)])
DIGESTS = st.sampled_from(["a" * 64, "b" * 64, "c" * 64])
OFFSETS = st.integers(-100, 100).map(lambda s: T0 + timedelta(seconds=s))


@st.composite
def states(draw: st.DrawFn) -> tuple[dict[str, Observation], dict[str, LiveRecord], datetime]:
    listed_at = draw(OFFSETS)
    observed = draw(
        st.dictionaries(
            TAGS,
            st.builds(
                Observation,
                st.none() | DIGESTS,
                st.integers(0, 50).map(lambda s: listed_at + timedelta(seconds=s)),
            ),
        )
    )
    records = draw(st.dictionaries(TAGS, st.builds(LiveRecord, DIGESTS, OFFSETS)))
    return observed, records, listed_at


def registry_view(observed: dict[str, Observation]) -> dict[str, str]:
    return {tag: o.digest for tag, o in observed.items() if o.digest is not None}


@given(states())
def test_applying_the_differences_makes_the_store_agree(
    state: tuple[dict[str, Observation], dict[str, LiveRecord], datetime],
) -> None:
    observed, records, listed_at = state
    result = diff_repository(REPO, observed, records, listed_at)
    store = {tag: r.artifact for tag, r in records.items()}
    for difference in result.differences:
        if difference.kind == "moved":
            assert difference.artifact is not None
            store[difference.tag] = difference.artifact
        else:
            del store[difference.tag]
    # every tag whose record is not newer than the observation now agrees
    newer = {
        t
        for t, r in records.items()
        if r.last_modified_on >= observed.get(t, Observation(None, listed_at)).at
    }
    expected = {t: d for t, d in registry_view(observed).items() if t not in newer}
    assert {t: d for t, d in store.items() if t not in newer} == expected
    assert len(newer) == result.newer


@given(states())
def test_never_touches_a_record_newer_than_its_observation(
    state: tuple[dict[str, Observation], dict[str, LiveRecord], datetime],
) -> None:
    observed, records, listed_at = state
    for difference in diff_repository(REPO, observed, records, listed_at).differences:
        record = records.get(difference.tag)
        assert record is None or record.last_modified_on < difference.observed_at
        at = observed[difference.tag].at if difference.tag in observed else listed_at
        assert difference.observed_at == at
        assert difference.stored == (record.artifact if record else None)


@given(st.dictionaries(TAGS, DIGESTS), OFFSETS)
def test_a_store_that_agrees_has_no_differences(registry: dict[str, str], at: datetime) -> None:
    observed = {tag: Observation(d, at) for tag, d in registry.items()}
    records = {tag: LiveRecord(d, at - timedelta(seconds=1)) for tag, d in registry.items()}
    result = diff_repository(REPO, observed, records, at)
    assert result.differences == ()
    assert result.agreed == len(registry)
