"""bench/drainpath.py: the two sides run a round batch by batch in lockstep, their order
alternating; packing closes a full record batch and begins the next; each round is a
stream of its own; the table pairs the steps (the timed run itself: ``make
bench-drainpath``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from bench import drainpath as bench
from bench import services
from worker.outcomes import Outcome


class _Recorder(bench.DrainPath):
    """A path that only says which of its batches ran, and when."""

    def __init__(self, name: str, log: list[tuple[str, int]]) -> None:
        self.name, self.log = name, log
        self.cpu = {step: [] for step in bench.STEPS}

    def raws(self, records: bench.Records) -> list[Any]:
        return list(range(len(records)))

    async def batch(self, chunk: Sequence[Any], producer: AIOKafkaProducer) -> dict[str, float]:
        self.log.append((self.name, chunk[0]))
        return dict.fromkeys(bench.STEPS, 0.001)


def test_a_round_runs_both_sides_batch_by_batch_in_alternating_order() -> None:
    log: list[tuple[str, int]] = []
    before, after = _Recorder("before", log), _Recorder("after", log)
    records: bench.Records = [(None, b"", ())] * 30
    asyncio.run(bench.drain_round([before, after], records, 10, None))
    assert log == [
        ("before", 0),
        ("after", 0),
        ("after", 10),
        ("before", 10),
        ("before", 20),
        ("after", 20),
    ]
    assert before.cpu["decode"] == [0.003 / 30 * 1e6]


def test_packing_begins_a_new_batch_when_one_is_full() -> None:
    async def packed() -> tuple[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", max_batch_size=1_024)
        small = [Outcome(b"k", b"v" * 100, 200) for _ in range(3)]
        large = [Outcome(b"k", b"v" * 400, 200) for _ in range(6)]
        return bench.pack(producer, small), bench.pack(producer, large)

    small, large = asyncio.run(packed())
    assert small == 1 and large >= 3


def test_each_round_is_a_stream_of_its_own() -> None:
    first, second = bench.round_stream(50, 0), bench.round_stream(50, 1)
    assert len(first) == 50 and first == bench.round_stream(50, 0)
    assert not {v for _, v, _ in first} & {v for _, v, _ in second}


def test_the_table_gives_each_step_and_both_ratios() -> None:
    figure = {"before_us": 40.0, "after_us": 30.0, "median_round_ratio": 0.8}
    results = {
        "config": {"baseline": "/work/main", "rounds": 3, "events": 10_000, "batch": 1_000},
        "machine": {"load_average_1m_at_start": 1.0},
        "figures": {"decode": figure},
    }
    shown = bench.render(results)
    row = next(line for line in shown.splitlines() if line.startswith("| decode"))
    assert [float(c) for c in row.strip("|").split("|")[1:]] == [40, 30, 0.75, 0.8]
    assert "worker/ of /work/main" in shown


def test_the_before_sides_sslmode_replaces_the_urls_and_keeps_the_rest() -> None:
    url = "postgresql://u@127.0.0.1:5432/db?sslmode=require&application_name=x"
    changed = services.with_sslmode(url, "disable")
    assert changed == "postgresql://u@127.0.0.1:5432/db?application_name=x&sslmode=disable"
    assert services.with_sslmode("postgresql://u@h/db", "disable").endswith("/db?sslmode=disable")
    assert services.with_sslmode(url, None) == url


def test_the_table_says_each_sides_tls_and_when_the_knob_changed_nothing() -> None:
    config: dict[str, Any] = {
        "baseline": "/work/main",
        "rounds": 3,
        "events": 10_000,
        "batch": 1_000,
        "before_sslmode": "disable",
        "tls": {"before": None, "after": "TLSv1.3"},
    }
    figure = {"before_us": 40.0, "after_us": 41.0, "median_round_ratio": 1.02}
    results = {
        "config": config,
        "machine": {"load_average_1m_at_start": 1.0},
        "figures": {"statements": figure},
    }
    shown = bench.render(results)
    assert "(sslmode=disable)" in shown
    assert "TLS to PostgreSQL: before none, after TLSv1.3" in shown
    assert "changed nothing" not in shown
    config["tls"] = {"before": "TLSv1.3", "after": "TLSv1.3"}
    assert "BENCH_DRAINPATH_BEFORE_SSLMODE changed nothing" in bench.render(results)
