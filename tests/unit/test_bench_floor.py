"""The floor's reading of records, the API benchmark's per-PUT split and the floor
table's A/B columns: pure parts of bench/floor.py, bench/api_split.py and bench/versus.py
(their runs: tests/integration/test_bench_smoke.py)."""

from __future__ import annotations

import cProfile
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from bench import profile as spy
from bench import versus
from bench.api_split import Split
from bench.floor import Event, read

DATA = {"repository": "team/app", "tag": "v1", "artifact": "sha256:" + "a" * 64}
ATTRIBUTES = {
    "specversion": "1.0",
    "id": "e1",
    "source": "https://hub.docker.com/webhook",
    "type": "ocitag.moved.v1",
    "time": "2026-12-06T05:00:00.123456Z",
}
EXPECTED = Event(
    "https://hub.docker.com/webhook",
    "e1",
    "team/app",
    "v1",
    "sha256:" + "a" * 64,
    datetime(2026, 12, 6, 5, 0, 0, 123456, tzinfo=UTC),
)


def record(value: bytes, headers: list[tuple[str, bytes]]) -> Any:
    return ConsumerRecord("t", 0, 7, 0, 0, b"k", value, None, len(value), 0, headers)


@pytest.mark.parametrize(
    ("value", "headers", "expected"),
    [
        (json.dumps({**ATTRIBUTES, "data": DATA}).encode(), [], EXPECTED),
        (
            json.dumps(DATA).encode(),
            [(f"ce_{k}", v.encode()) for k, v in ATTRIBUTES.items()],
            EXPECTED,
        ),
        (b"\x01not json", [], None),
        (json.dumps({**ATTRIBUTES, "data": {"tag": "v1"}}).encode(), [], None),
    ],
    ids=["structured", "binary", "not json", "no repository"],
)
def test_the_floor_reads_both_content_modes_and_nothing_else(
    value: bytes, headers: list[tuple[str, bytes]], expected: Event | None
) -> None:
    assert read(record(value, headers)) == expected


def test_each_put_is_split_into_the_workers_time_and_the_apis() -> None:
    split = Split("unused:9092", "in", "out", 1)
    split.created.update({"a": 1_000, "b": 2_000})
    split.answered.update({"a": 1_040, "b": 2_100})
    puts = [("a", 0.050, 0.996), ("b", 0.130, 1.980), ("never answered", 0.5, 3.0)]
    found = split.summary(puts)
    assert (found["split_matched"], found["split_puts"]) == (2, 3)
    assert (found["worker_split_p50_ms"], found["worker_split_p99_ms"]) == (40.0, 100.0)
    assert (found["api_added_p50_ms"], found["api_added_p99_ms"]) == (10.0, 30.0)
    # a: sent at 996 ms, event created at 1,000, outcome at 1,040, answer read at 1,046
    assert (found["api_in_p50_ms"], found["api_in_p99_ms"]) == (4.0, 20.0)
    assert (found["api_out_p50_ms"], found["api_out_p99_ms"]) == (6.0, 10.0)


def _drain(eps: float) -> dict[str, Any]:
    return {
        "events_per_second": eps,
        "late_events_per_second": None,
        "cpu_cores": {"worker": eps / 10_000, "other": 0.5},
        "database": {
            "total": 1_000,
            "pg_database_size": 2_000,
            "tables": {
                "ocitags": {"total": 600},
                "ocitag_history": {"total": 300},
                "ocitag_history_names": {"total": 100},
            },
        },
        "outcomes": {"total": 10, "by_status": {}, "complete": True, "missing": 0, "extra": 0},
    }


def _latency(p99: float) -> dict[str, Any]:
    return {
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "max_ms": p99 * 2,
        "cpu_cores": {"worker": 0.2},
        "achieved_rate": 2_000,
        "offered_rate": 2_000,
        "sent": 10,
        "matched": 10,
        "complete": True,
    }


def test_a_baseline_checkout_gets_its_column_and_the_projects_ratio_to_it() -> None:
    """BENCH_FLOOR_BASELINE: the worker of another checkout runs as ``before`` and every
    measure gets project / before beside project / floor."""
    results: dict[str, Any] = {
        "config": {"rate": 2_000.0, "baseline": "/work/main"},
        "machine": {"load_average_1m_at_start": 1.0},
        "sizes": [{"size": 10, "floor": _drain(100), "before": _drain(50), "project": _drain(80)}],
        "latency": {"floor": _latency(40), "before": _latency(200), "project": _latency(60)},
    }
    results["table"] = versus.rows(results)
    by = {r["measure"]: r for r in results["table"]}
    assert by["drain 10: events/s"]["project_over_before"] == 1.6
    assert by["drain 10: events/s"]["project_over_floor"] == 0.8
    assert by["2,000/s, fresh store: p99 ms"]["project_over_before"] == 0.3
    assert by["drain 10: CPU other, cores"]["project_over_before"] is None
    # the history's tables (issue 22's own budget) are set aside in a row of their own
    assert by["drain 10: DB bytes/event (tables)"]["project"] == 100
    assert by["drain 10: DB bytes/event (tables, history aside)"]["project"] == 60
    shown = versus.render(results)
    assert "project / before" in shown and "before: the worker of /work/main" in shown
    without: dict[str, Any] = {
        **results,
        "sizes": [{k: v for k, v in results["sizes"][0].items() if k != "before"}],
    }
    without["latency"] = {k: v for k, v in results["latency"].items() if k != "before"}
    without["table"] = versus.rows(without)
    assert all("project_over_before" not in r for r in without["table"])
    assert "project / before" not in versus.render(without)


def test_the_rate_phase_alone_paired_and_profiled_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BENCH_FLOOR_SIZES", "none")
    monkeypatch.setenv("BENCH_FLOOR_TOGETHER", "1")
    monkeypatch.setenv("BENCH_PROFILE", "1")
    monkeypatch.setenv("BENCH_CALLS", "1")
    monkeypatch.setenv("BENCH_FLOOR_PROJECT", "/tmp/other-checkout")
    config = versus.VersusConfig.from_env()
    assert config.sizes == ()
    assert config.together and config.profile and config.calls
    assert config.project_checkout == Path("/tmp/other-checkout")
    monkeypatch.setenv("BENCH_FLOOR_SIZES", "")
    assert versus.VersusConfig.from_env().sizes == versus.SIZES
    assert versus.VersusConfig.from_env().partitions == 6
    monkeypatch.setenv("BENCH_FLOOR_PARTITIONS", "1")
    assert versus.VersusConfig.from_env().partitions == 1
    assert versus.VersusConfig.from_env().input_partitions == 0  # as the others
    monkeypatch.setenv("BENCH_FLOOR_INPUT_PARTITIONS", "1")
    assert versus.VersusConfig.from_env().input_partitions == 1


def test_repeated_rate_phases_give_each_rounds_ratios_and_their_medians(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BENCH_FLOOR_RATE_ROUNDS", "3")
    assert versus.VersusConfig.from_env().rate_rounds == 3
    monkeypatch.setenv("BENCH_FLOOR_RATE_ROUNDS", "0")
    assert versus.VersusConfig.from_env().rate_rounds == 1

    def phase(p50: float, p99: float) -> dict[str, Any]:
        return {"p50_ms": p50, "p99_ms": p99, "cpu_cores": {"steal": p50 / 100}}

    found = versus.rate_rounds(
        [
            {"before": phase(60, 90), "project": phase(50, 100), "floor": phase(40, 60)},
            {"before": phase(70, 80), "project": phase(55, 90), "floor": phase(35, 70)},
            {"before": phase(65, 150), "project": phase(52, 120), "floor": phase(38, 65)},
        ]
    )
    first = found["rounds"][0]
    assert (first["round"], first["project_p99_ms"], first["floor_p99_ms"]) == (1, 100, 60)
    assert (first["project_steal_cores"], first["floor_steal_cores"]) == (0.5, 0.4)
    assert [r["p99_project_over_floor"] for r in found["rounds"]] == [1.67, 1.29, 1.85]
    assert [r["p99_project_over_before"] for r in found["rounds"]] == [1.11, 1.12, 0.8]
    # the median of the rounds' ratios, not the ratio of the medians (1.54 here)
    assert found["medians"]["p99_project_over_floor"] == 1.67
    assert found["medians"]["p50_project_over_floor"] == 1.37
    assert found["medians"]["p99_project_over_before"] == 1.11
    text = versus.render_rounds(found)
    assert "3 rounds" in text and "| median" in text and "1.67" in text


def test_a_rate_profile_says_each_buckets_cpu_per_batch(tmp_path: Path) -> None:
    """py-spy's collapsed stacks of a rate phase: per event and per batch (200 Hz)."""
    stacks = tmp_path / "profile.txt"
    stacks.write_text(
        "run (worker/cli.py:1);apply (worker/store.py:9);"
        "_do_execute (asyncpg/connection.py:3) 300\n"
        "run (worker/cli.py:1);decode (worker/decode.py:5) 100\n"
    )
    found = versus.rate_profile(stacks, events=1_000, batches=100)
    assert found["us_per_batch"] == 20_000  # 2 s of samples over 100 batches
    assert found["buckets"]["database"]["us_per_batch"] == 15_000
    assert "µs/batch" in spy.render(found)


def test_call_counts_per_batch_come_from_a_cprofile_dump(tmp_path: Path) -> None:
    def per_batch() -> None:
        time.monotonic()

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(30):
        per_batch()
    profiler.disable()
    profiler.dump_stats(tmp_path / "calls.pstats")
    found = {c["function"]: c for c in spy.calls(tmp_path / "calls.pstats", batches=10)}
    ours = next(c for name, c in found.items() if name.endswith(":per_batch"))
    assert ours["calls"] == 30 and ours["per_batch"] == 3.0


def test_an_offset_commits_request_counts_as_the_commit_not_the_fetch() -> None:
    """The group coordinator's inner frames are under aiokafka/consumer/, as the fetch's."""
    commit = (
        "Runner.run (asyncio/runners.py:118)",
        "GroupCoordinator._do_commit_offsets (aiokafka/consumer/group_coordinator.py:1045)",
        "GroupCoordinator._send_req (aiokafka/consumer/group_coordinator.py:307)",
        "AIOKafkaConnection.send (aiokafka/conn.py:423)",
        "StreamWriter.write (asyncio/streams.py:343)",
    )
    fetch = (
        "Runner.run (asyncio/runners.py:118)",
        "Fetcher._proc_fetch_request (aiokafka/consumer/fetcher.py:780)",
        "AIOKafkaConnection.send (aiokafka/conn.py:423)",
        "StreamWriter.write (asyncio/streams.py:343)",
    )
    assert spy.bucket_of(commit) == "commit"
    assert spy.bucket_of(fetch) == "fetch"
