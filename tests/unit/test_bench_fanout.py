"""bench/fanout.py at a tiny size: every delivery is counted and both paths run (the
figures themselves are the benchmark's, not a timed test's)."""

from __future__ import annotations

from bench.fanout import one


async def test_the_fanout_benchmark_runs_at_a_tiny_size() -> None:
    slow = await one(20, False, reads=3, records=40)
    fast = await one(20, True, reads=3, records=40)
    assert slow["deliveries"] == fast["deliveries"] == 20 * 3 * 40
    assert (slow["path"], fast["path"]) == ("record by record", "joined once")
    assert fast["cpu_seconds"] >= 0 and slow["cpu_seconds"] > 0
