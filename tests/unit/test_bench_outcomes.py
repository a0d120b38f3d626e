"""bench/outcomes.py: the baseline is another ``worker`` package (its own modules, this
checkout's put back), each kind's batch answers with its kind's status on both sides,
and the table pairs them (the timed run itself: ``make bench-outcomes``)."""

from __future__ import annotations

import sys
from pathlib import Path

from bench import outcomes as bench
from worker import outcomes as ours

CHECKOUT = Path(__file__).resolve().parents[2]


def test_the_baseline_runs_on_its_own_modules_and_ours_are_put_back() -> None:
    baseline = bench.load_side("before", CHECKOUT)
    assert (
        baseline.outcomes is not ours
        and baseline.decision.Applied is not bench.load_side("after", None).decision.Applied
    )
    assert sys.modules["worker.outcomes"] is ours
    assert baseline.outcomes.Applied is baseline.decision.Applied  # its own, not ours


def test_each_kind_answers_with_its_status_on_either_side() -> None:
    for side in (bench.load_side("before", CHECKOUT), bench.load_side("after", None)):
        ctx = side.outcomes.OutcomeContext("urn:test", "https://example.com/problems/")
        for kind in bench.KINDS:
            work = bench.kind_work(side, ctx, kind, 3)
            status = int(kind.split()[-2] if kind.startswith("replay") else kind.split()[0])
            assert work.statuses == {status: 3}, (side.name, kind)
        mix = bench.drain_work(side, ctx, bench.stream(200), 50)
        assert sum(mix.statuses.values()) == 200 and set(mix.statuses) <= {200, 409}
        decoded = bench.decode_work(side, bench.stream(200)).statuses
        assert sum(decoded.values()) == 200 and decoded[200] > 150


def test_the_table_gives_each_kind_before_after_and_their_ratio() -> None:
    figure = {"before_us": 20.0, "after_us": 15.0}
    results = {
        "config": {"baseline": "/work/main", "rounds": 3, "batch": 1000, "drain": 20_000},
        "machine": {"load_average_1m_at_start": 1.0},
        "figures": {"200 created": figure},
    }
    shown = bench.render(results)
    row = next(line for line in shown.splitlines() if line.startswith("| 200 created"))
    assert [float(c) for c in row.strip("|").split("|")[1:]] == [20, 15, 0.75]
    assert "worker/ of /work/main" in shown
