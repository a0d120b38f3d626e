"""When the store analyses its tables (worker/statistics.py): the ladder, per partition."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import pytest

from worker.statistics import LADDER, Statistics, rungs_crossed


@pytest.mark.parametrize(
    ("before", "after", "crossed"),
    [
        (0, 999, False),
        (0, 1_000, True),  # the rung itself counts
        (999, 1_001, True),
        (1_000, 1_008, False),  # already past it
        (9_995, 10_003, True),
        (500, 20_000, True),  # a large batch over two rungs: one analysis
        (100_000, 10_000_000, False),  # past the ladder: autovacuum's work
        (0, 0, False),
    ],
)
def test_rungs(before: int, after: int, crossed: bool) -> None:
    assert rungs_crossed(before, after) is crossed


class _Analyser:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail = fail

    async def __call__(self, tables: Sequence[str]) -> None:
        self.calls.append(list(tables))
        await self.release.wait()
        if self.fail:
            raise asyncpg.PostgresError("canceling statement due to statement timeout")


async def test_each_partition_climbs_the_ladder_from_its_first_record() -> None:
    analyser = _Analyser()
    stats = Statistics(analyser)
    for _ in range(130):  # 1,040 records in epoch 1
        stats.recorded(1, 8)
    await stats.close()
    assert analyser.calls == [["processed_events_e1", "ocitags"]]
    stats.recorded(2, 999)  # a rotation: the new partition's count starts at 0
    stats.recorded(2, 1)
    stats.recorded(1, 9_000)  # a batch begun before the rotation: the old one is closed
    await stats.close()
    assert analyser.calls[1:] == [["processed_events_e2", "ocitags"]]
    assert stats.analyses == 2 and LADDER[0] == 1_000


async def test_one_analysis_at_a_time_and_the_latest_epoch_follows() -> None:
    analyser = _Analyser()
    analyser.release.clear()
    stats = Statistics(analyser)
    stats.recorded(1, 1_000)
    await asyncio.sleep(0)
    stats.recorded(2, 1_000)  # crossed while the first runs: queued, not concurrent
    stats.recorded(3, 1_000)  # and replaced by the newer partition
    await asyncio.sleep(0)
    assert len(analyser.calls) == 1
    analyser.release.set()
    await stats.close()
    assert [c[0] for c in analyser.calls] == ["processed_events_e1", "processed_events_e3"]


async def test_a_failed_analysis_is_logged_and_the_batches_go_on() -> None:
    analyser = _Analyser(fail=True)
    stats = Statistics(analyser)
    stats.recorded(1, 1_000)
    await stats.close()
    assert stats.analyses == 0 and len(analyser.calls) == 1
    stats.recorded(1, 9_000)  # the next rung tries again
    await stats.close()
    assert len(analyser.calls) == 2
