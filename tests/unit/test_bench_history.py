"""The history benchmark's arithmetic: paces over windows of one drain, and the flat
ratios its summary reports."""

from __future__ import annotations

from typing import Any

from bench.history import early_pace, late_pace, summarise, window_pace

# (seconds since the first fetch, committed events, RSS): 1,000 events/s for the first
# 50 s, then 500 events/s
SERIES = [[t, t * 1_000 if t <= 50 else 50_000 + (t - 50) * 500, 0] for t in range(0, 151)]
TOTAL = 100_000


def test_a_window_pace_is_the_events_between_its_bounds_over_their_seconds() -> None:
    assert window_pace(SERIES, TOTAL, 0.05, 0.25) == 1_000.0
    assert early_pace(SERIES, TOTAL) == 1_000.0
    assert late_pace(SERIES, TOTAL) == 500.0
    assert window_pace(SERIES, TOTAL, 0.40, 0.60) == 666.7  # 20,000 in 30 s, across the change


def test_a_window_the_drain_never_reached_has_no_pace() -> None:
    assert window_pace(SERIES[:10], TOTAL, 0.75, 0.95) is None


def _entry(size: int, pace: float, early: float, late: float) -> dict[str, Any]:
    drain = {
        "events_per_second": pace,
        "early_events_per_second": early,
        "late_events_per_second": late,
        "cpu_cores": {"worker": 0.9, "postgres": 0.3, "other": 0.0, "steal": 0.01},
    }
    return {"size": size, "drain": drain, "database": {"total": size * 250}}


def test_the_summary_gives_both_flat_ratios() -> None:
    summary = summarise(
        {"sizes": [_entry(50_000, 10_000, 9_000, 11_000), _entry(1_000_000, 8_000, 8_400, 7_980)]}
    )
    assert summary["flat_ratio"] == 0.8
    assert summary["flat_within_largest"] == 0.95
    assert [row["bytes_per_event"] for row in summary["table"]] == [250, 250]
    assert summary["table"][1]["worker_us_per_event"] == 112.5
