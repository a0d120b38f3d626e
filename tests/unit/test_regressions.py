"""A stored version gone backwards, seen at apply time (worker/regressions.py): the pure
rule, table-driven and with hypothesis, and the bounded memory of what was written."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.strategies import BASE, tag_record
from worker.decision import TagRecord
from worker.regressions import (
    CAPACITY,
    Regression,
    VersionMemory,
    regressed,
    remembered,
    unprunable_since,
)

TAG = ("docker.io/library/app", "1.0")
#: when the rows below were written, and read
WRITTEN = datetime(2026, 12, 1, tzinfo=UTC)
RETENTION = timedelta(days=30)


def memory(capacity: int = CAPACITY) -> VersionMemory:
    return VersionMemory(RETENTION, capacity)


def deleted(row: TagRecord) -> TagRecord:
    return replace(row, deleted_on=row.last_modified_on, deleted_by="x")


def at(version: int, seconds: int | None = None, tag: str = "1.0") -> TagRecord:
    """A row of ``tag`` at ``version``, moved at BASE + ``seconds`` (default: version)."""
    when = BASE + timedelta(seconds=version if seconds is None else seconds)
    return tag_record(tag, version, last_modified_on=when)


#: a write the retention (less its margin) has not passed: nothing after it can be pruned
YOUNG = timedelta(seconds=5)
#: a write older than the retention: a successor's tombstone may have been pruned
OLD = timedelta(days=31)


@pytest.mark.parametrize(
    ("wrote", "read", "ago", "expected"),
    [
        (None, at(3), YOUNG, False),  # never written here
        (at(5), at(5), YOUNG, False),  # as written
        (at(5), at(7), YOUNG, False),  # another worker wrote it since
        (at(5), at(4), YOUNG, True),  # the failover lost version 5
        (at(5), None, YOUNG, True),  # a lost creation
        # a tag created and deleted in what the failover lost: version 1 would be reused
        (deleted(at(2)), None, YOUNG, True),
        (deleted(at(0)), None, YOUNG, True),  # a 404's tombstone (version 0) lost
        # a lost version whose event time equals the one kept (a tie broken by the id)
        (at(5), at(4, seconds=5), YOUNG, True),
        # lower version, later time: a re-creation, but after a tombstone too young to
        # have been pruned: the tombstone was lost
        (at(5), at(1, seconds=60), YOUNG, True),
        (None, None, OLD, False),
        (at(5), at(4), OLD, True),  # lower version and older time: lost, however long ago
        (at(5), at(7), OLD, False),
        # no row: a successor's tombstone may have been pruned since
        (at(5), None, OLD, False),
        (deleted(at(5)), None, OLD, False),
        # a tombstone pruned and the tag created again: version 1, a later event
        (deleted(at(5)), at(1, seconds=60), OLD, False),
        (at(5), at(2, seconds=30), OLD, False),
        (at(5), at(3, seconds=5), OLD, False),  # the same time: not older
    ],
)
def test_the_rule(
    wrote: TagRecord | None, read: TagRecord | None, ago: timedelta, expected: bool
) -> None:
    mine = remembered(wrote, WRITTEN) if wrote else None
    assert regressed(mine, read, unprunable_since(WRITTEN + ago, RETENTION)) is expected


@pytest.mark.parametrize(
    ("read_after", "retention", "young"),
    [
        (timedelta(days=29), RETENTION, True),  # within retention less the clocks' hour
        (RETENTION - timedelta(hours=1, microseconds=1), RETENTION, True),
        (RETENTION - timedelta(hours=1), RETENTION, False),  # may be pruned from here
        (timedelta(days=29, hours=23, minutes=1), RETENTION, False),
        # a short retention: the margin is half of it
        (timedelta(seconds=29), timedelta(seconds=60), True),
        (timedelta(seconds=30), timedelta(seconds=60), False),
    ],
)
def test_a_write_is_young_until_the_retention_less_its_margin(
    read_after: timedelta, retention: timedelta, young: bool
) -> None:
    """Young, a missing row or any lower version is a loss; from the boundary on only a
    lower version with an older event time is."""
    unprunable_after = unprunable_since(WRITTEN + read_after, retention)
    for wrote in (at(5), deleted(at(5))):
        mine = remembered(wrote, WRITTEN)
        assert regressed(mine, None, unprunable_after) is young
        assert regressed(mine, at(4, seconds=5), unprunable_after) is young
        assert regressed(mine, at(4), unprunable_after)


def test_the_memory_reports_a_lost_creation_and_deletion_until_retention() -> None:
    """The failover lost a tag's creation and deletion; the tag is created again."""
    remembering = memory()
    remembering.remember([deleted(at(2))], WRITTEN)
    lost = [Regression("docker.io/library/app:1.0", 2, None)]
    assert remembering.check({TAG: None}, WRITTEN + YOUNG) == lost
    assert remembering.check({TAG: None}, WRITTEN + OLD) == []


def test_the_memory_reports_a_row_read_older_than_written() -> None:
    remembering = memory()
    remembering.remember([at(5), at(2, tag="2.0")], WRITTEN)
    read = {TAG: at(4), ("docker.io/library/app", "2.0"): at(2, tag="2.0")}
    assert remembering.check(read, WRITTEN) == [Regression("docker.io/library/app:1.0", 5, 4)]
    remembering.remember([at(5, seconds=9)], WRITTEN)  # the batch after it wrote 5 again
    assert remembering.check({TAG: at(5, seconds=9)}, WRITTEN) == []


def test_a_newer_row_another_batch_of_this_process_wrote_meanwhile_is_no_regression() -> None:
    """Batch A reads the tag at 5; batch B (another partition) commits 6 and remembers
    it; A then commits. What A read is older than 6 without any loss: A checks only what
    was remembered before it began."""
    remembering = memory()
    remembering.remember([at(5)], WRITTEN)
    since_a = remembering.mark()
    remembering.remember([at(6)], WRITTEN)  # batch B, committed while A ran
    assert remembering.check({TAG: at(5)}, WRITTEN, since_a) == []
    assert remembering.check({TAG: None}, WRITTEN, since_a) == []  # a creation B made meanwhile
    # what was remembered before A began still counts
    remembering.remember([at(8, tag="2.0")], WRITTEN)
    since_c = remembering.mark()
    other = ("docker.io/library/app", "2.0")
    assert remembering.check({other: at(7, tag="2.0")}, WRITTEN, since_c) == [
        Regression("docker.io/library/app:2.0", 8, 7)
    ]


def test_the_memory_keeps_the_most_recently_written_tags() -> None:
    remembering = memory(capacity=2)
    remembering.remember([at(5, tag="a"), at(5, tag="b")], WRITTEN)
    remembering.remember([at(6, tag="a")], WRITTEN)  # a moves to the recent end
    remembering.remember([at(5, tag="c")], WRITTEN)  # b, the oldest, goes
    assert len(remembering) == 2
    older = {("docker.io/library/app", t): at(1, tag=t) for t in "abc"}
    assert sorted(r.ocitag_id[-1] for r in remembering.check(older, WRITTEN)) == ["a", "c"]


def test_what_a_remembered_tag_costs() -> None:
    """The figure the module docstring and docs/replicated.md give: about 220 bytes,
    live or deleted, written in batches of 500 (which share their "when written")."""
    for wrote in (lambda row: row, deleted):
        rows = [wrote(at(v, tag=f"t{v}")) for v in range(1, 20_001)]
        remembering = memory()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for start in range(0, len(rows), 500):
                remembering.remember(rows[start : start + 500], WRITTEN + timedelta(start))
            per_tag = (tracemalloc.get_traced_memory()[0] - before) / len(rows)
        finally:
            tracemalloc.stop()
        assert 150 < per_tag < 280, per_tag


@given(
    st.lists(
        st.tuples(st.sampled_from("abcdef"), st.integers(1, 30), st.integers(0, 60)),
        max_size=60,
    ),
    st.integers(1, 4),
)
def test_the_memory_is_bounded_and_remembers_the_last_write(
    writes: list[tuple[str, int, int]], capacity: int
) -> None:
    remembering = memory(capacity)
    last: dict[str, TagRecord] = {}
    for tag, version, seconds in writes:
        row = at(version, seconds, tag)
        remembering.remember([row], WRITTEN)
        last.pop(tag, None)
        last[tag] = row
        assert len(remembering) <= capacity
    kept = list(last)[-capacity:] if writes else []
    # a read one version and one second below the last write is reported for exactly the
    # tags still remembered
    reads = {
        ("docker.io/library/app", t): at(r.version - 1, _seconds(r) - 1, t) for t, r in last.items()
    }
    found = remembering.check(reads, WRITTEN)
    assert sorted(r.ocitag_id.rsplit(":", 1)[1] for r in found) == sorted(kept)


def _seconds(row: TagRecord) -> int:
    return int((row.last_modified_on - BASE).total_seconds())
