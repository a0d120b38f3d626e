"""A stored version gone backwards, seen at apply time (worker/regressions.py): the pure
rule, table-driven and with hypothesis, and the bounded memory of what was written."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.strategies import BASE, tag_record
from worker.decision import TagRecord
from worker.regressions import Regression, VersionMemory, regressed, remembered

TAG = ("docker.io/library/app", "1.0")


def at(version: int, seconds: int | None = None, tag: str = "1.0") -> TagRecord:
    """A row of ``tag`` at ``version``, moved at BASE + ``seconds`` (default: version)."""
    when = BASE + timedelta(seconds=version if seconds is None else seconds)
    return tag_record(tag, version, last_modified_on=when)


@pytest.mark.parametrize(
    ("wrote", "read", "expected"),
    [
        (None, at(3), False),  # never written here
        (at(5), None, True),  # a live record's row gone: lost (only tombstones are pruned)
        (replace(at(5), deleted_on=BASE, deleted_by="x"), None, False),  # a pruned tombstone
        (at(5), at(5), False),  # as written
        (at(5), at(7), False),  # another worker wrote it since
        (at(5), at(4), True),  # the failover lost version 5
        (at(5), at(4, seconds=4, tag="1.0"), True),
        # a tombstone pruned and the tag created again: version 1, a later event
        (replace(at(5), deleted_on=BASE, deleted_by="x"), at(1, seconds=60), False),
        # lower version, later time: not a regression (a re-creation after pruning)
        (at(5), at(2, seconds=30), False),
        # same time, lower version: not strictly older in time
        (at(5), at(3, seconds=5), False),
    ],
)
def test_the_rule(wrote: TagRecord | None, read: TagRecord | None, expected: bool) -> None:
    assert regressed(remembered(wrote) if wrote else None, read) is expected


def test_the_memory_reports_a_row_read_older_than_written() -> None:
    memory = VersionMemory()
    memory.remember([at(5), at(2, tag="2.0")])
    found = memory.check({TAG: at(4), ("docker.io/library/app", "2.0"): at(2, tag="2.0")})
    assert found == [Regression("docker.io/library/app:1.0", 5, 4)]
    memory.remember([at(5, seconds=9)])  # the batch after it wrote version 5 again
    assert memory.check({TAG: at(5, seconds=9)}) == []


def test_a_newer_row_another_batch_of_this_process_wrote_meanwhile_is_no_regression() -> None:
    """Batch A reads the tag at 5; batch B (another partition) commits 6 and remembers
    it; A then commits. What A read is older than 6 without any loss: A checks only what
    was remembered before it began."""
    memory = VersionMemory()
    memory.remember([at(5)])
    since_a = memory.mark()
    memory.remember([at(6)])  # batch B, committed while A ran
    assert memory.check({TAG: at(5)}, since_a) == []
    assert memory.check({TAG: None}, since_a) == []  # a creation B made meanwhile
    # what was remembered before A began still counts
    memory.remember([at(8, tag="2.0")])
    since_c = memory.mark()
    other = ("docker.io/library/app", "2.0")
    assert memory.check({other: at(7, tag="2.0")}, since_c) == [
        Regression("docker.io/library/app:2.0", 8, 7)
    ]


def test_the_memory_keeps_the_most_recently_written_tags() -> None:
    memory = VersionMemory(capacity=2)
    memory.remember([at(5, tag="a"), at(5, tag="b")])
    memory.remember([at(6, tag="a")])  # a moves to the recent end
    memory.remember([at(5, tag="c")])  # b, the oldest, goes
    assert len(memory) == 2
    older = {("docker.io/library/app", t): at(1, tag=t) for t in "abc"}
    assert sorted(r.ocitag_id[-1] for r in memory.check(older)) == ["a", "c"]


def test_what_a_remembered_tag_costs() -> None:
    """The figure the module docstring and docs/replicated.md give: about 180 bytes."""
    rows = [at(v, tag=f"t{v}") for v in range(1, 20_001)]
    memory = VersionMemory()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        memory.remember(rows)
        per_tag = (tracemalloc.get_traced_memory()[0] - before) / len(rows)
    finally:
        tracemalloc.stop()
    assert 60 < per_tag < 250, per_tag


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
    memory = VersionMemory(capacity)
    last: dict[str, TagRecord] = {}
    for tag, version, seconds in writes:
        row = at(version, seconds, tag)
        memory.remember([row])
        last.pop(tag, None)
        last[tag] = row
        assert len(memory) <= capacity
    kept = list(last)[-capacity:] if writes else []
    # a read one version and one second below the last write is reported for exactly the
    # tags still remembered
    reads = {
        ("docker.io/library/app", t): at(r.version - 1, _seconds(r) - 1, t) for t, r in last.items()
    }
    assert sorted(r.ocitag_id.rsplit(":", 1)[1] for r in memory.check(reads)) == sorted(kept)


def _seconds(row: TagRecord) -> int:
    return int((row.last_modified_on - BASE).total_seconds())
