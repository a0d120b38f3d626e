"""When the store analyses its tables (worker/statistics.py): the ladder, per partition,
one analysis at a time, and what a refusal or a held lock leaves."""

from __future__ import annotations

import asyncio

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
    """Records the tables asked for; answers as told (None: analysed)."""

    def __init__(self, answer: str | BaseException | None = None) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()
        self.release.set()
        self.answer = answer

    async def __call__(self, table: str) -> str | None:
        self.calls.append(table)
        await self.release.wait()
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


async def test_each_partition_climbs_the_ladder_from_its_first_record() -> None:
    analyser = _Analyser()
    stats = Statistics(analyser)
    for _ in range(130):  # 1,040 records in epoch 1
        stats.recorded(1, 8)
    await stats.settled()
    assert analyser.calls == ["processed_events_e1", "ocitags"]
    stats.recorded(2, 999)  # a rotation: the new partition's count starts at 0
    stats.recorded(2, 1)
    stats.recorded(1, 9_000)  # a batch begun before the rotation: the old one is closed
    await stats.settled()
    assert analyser.calls[2:] == ["processed_events_e2", "ocitags"]
    assert stats.analyses == 4 and LADDER[0] == 1_000


async def test_one_analysis_at_a_time_and_the_latest_epoch_follows() -> None:
    analyser = _Analyser()
    analyser.release.clear()
    stats = Statistics(analyser)
    stats.recorded(1, 1_000)
    await asyncio.sleep(0)
    stats.recorded(2, 1_000)  # crossed while the first runs: queued, not concurrent
    stats.recorded(3, 1_000)  # and replaced by the newer partition
    await asyncio.sleep(0)
    assert analyser.calls == ["processed_events_e1"]
    analyser.release.set()
    await stats.settled()
    assert analyser.calls == [
        "processed_events_e1",
        "ocitags",
        "processed_events_e3",
        "ocitags",
    ]


@pytest.mark.parametrize(
    "answer",
    [
        asyncpg.PostgresError("canceling statement due to statement timeout"),
        asyncpg.LockNotAvailableError("canceling statement due to lock timeout"),
        RuntimeError("a bug in the analyser"),
    ],
)
async def test_a_failed_analysis_is_logged_and_the_batches_go_on(answer: Exception) -> None:
    analyser = _Analyser(answer)
    stats = Statistics(analyser)
    stats.recorded(1, 1_000)
    await stats.settled()
    assert stats.analyses == 0 and len(analyser.calls) == 2
    stats.recorded(1, 9_000)  # the next rung tries again
    await stats.settled()
    assert len(analyser.calls) == 4


async def test_a_table_the_role_does_not_own_is_reported_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    analyser = _Analyser('skipping "ocitags" --- only table or database owner can analyze it')
    stats = Statistics(analyser)
    stats.recorded(1, 1_000)
    stats.recorded(1, 9_000)
    await stats.settled()
    stats.recorded(1, 90_000)
    await stats.settled()
    assert stats.analyses == 0 and stats.skipped == {"processed_events_e1", "ocitags"}
    assert capsys.readouterr().out.count("analyse_skipped") == 2


async def test_closing_stops_an_analysis_in_progress() -> None:
    analyser = _Analyser()
    analyser.release.clear()  # an analysis that would wait for ever
    stats = Statistics(analyser)
    stats.recorded(1, 1_000)
    await asyncio.sleep(0)
    await asyncio.wait_for(stats.close(), timeout=1)
    assert analyser.calls == ["processed_events_e1"] and stats.analyses == 0
