"""The outage tracker (worker/outage.py): which failures and successes of a dependency
become a line. Each case: a timeline of (second, "fail" or "ok") and the lines it gives
as (second, change, errors since the previous line, seconds since the outage began)."""

from __future__ import annotations

import pytest

from worker.outage import Change, OutageTracker

EVERY = 10.0
S, G, E = Change.STARTED, Change.ONGOING, Change.ENDED  # started, ongoinG, ended


def _fails(start: float, end: float, step: float) -> list[tuple[float, str]]:
    count = round((end - start) / step)
    return [(start + n * step, "fail") for n in range(count)]


CASES = {
    "up stays quiet": ([(0, "ok"), (5, "ok")], []),
    "one failure then success": ([(0, "fail"), (3, "ok")], [(0, S, 1, 0), (3, E, 0, 3)]),
    # 70 failures a second for 25 s: a start, one line per EVERY, an end
    "a flood is three lines and an end": (
        [*_fails(0, 25, 1 / 70), (25, "ok")],
        [(0, S, 1, 0), (10, G, 700, 10), (20, G, 700, 20), (25, E, 349, 25)],
    ),
    "failures below the rate give no ongoing line": (
        [(0, "fail"), (4, "fail"), (9, "fail"), (9.5, "ok")],
        [(0, S, 1, 0), (9.5, E, 2, 9.5)],
    ),
    "a second outage after a quiet spell starts anew": (
        [(0, "fail"), (1, "ok"), (30, "fail"), (32, "ok")],
        [(0, S, 1, 0), (1, E, 0, 1), (30, S, 1, 0), (32, E, 0, 2)],
    ),
    # one broker of several away: its connections fail while metadata refreshes work
    "flapping within EVERY of the end reopens the outage silently": (
        [(0, "fail"), (1, "ok"), (1.5, "fail"), (2, "ok"), (2.5, "fail"), (3, "ok")],
        [(0, S, 1, 0), (1, E, 0, 1)],
    ),
    "a reopened outage that lasts says so, from its first start, and ends": (
        [(0, "fail"), (1, "ok"), (2, "fail"), (11, "fail"), (12, "ok")],
        [(0, S, 1, 0), (1, E, 0, 1), (11, G, 2, 11), (12, E, 0, 12)],
    ),
    "successes while up and repeated ones change nothing": (
        [(0, "ok"), (1, "fail"), (2, "ok"), (3, "ok")],
        [(1, S, 1, 0), (2, E, 0, 1)],
    ),
}


@pytest.mark.parametrize(("timeline", "lines"), CASES.values(), ids=CASES.keys())
def test_what_an_outage_logs(
    timeline: list[tuple[float, str]], lines: list[tuple[float, Change, int, float]]
) -> None:
    tracker = OutageTracker(EVERY)
    said: list[tuple[float, Change, int, float]] = []
    latest = ""
    for second, what in timeline:
        if what == "fail":
            latest = f"error at {second}"
            report = tracker.failed(second, latest)
        else:
            report = tracker.succeeded(second)
        if report is not None:
            said.append((second, report.change, report.errors, round(report.seconds, 6)))
            assert report.error == latest
    assert said == lines
    assert tracker.down == (timeline[-1][1] == "fail")
