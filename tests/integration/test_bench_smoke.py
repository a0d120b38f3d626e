"""The pipeline benchmark's machinery at a tiny size on the test services: every part
runs, every input gets its outcome, the results have their shape. No timing is
asserted (the figures of a 2,000-event run on a shared machine mean nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import history, pipeline, state, versus, watch
from bench.chart import draw_history
from bench.services import Services as BenchServices
from tests.helpers.services import Services

pytestmark = pytest.mark.integration

EVENTS = 2_000


async def test_pipeline_benchmark_runs_end_to_end_at_a_tiny_size(
    services: Services, tmp_path: Path
) -> None:
    config = pipeline.Config(
        events=EVENTS,
        tags=400,
        rate=300.0,
        latency_seconds=3.0,
        naive_events=150,
        raw_store_events=EVENTS,
        results_dir=tmp_path,
    )
    results = await pipeline.run(
        config, BenchServices(services.kafka_bootstrap, services.database_url, "tests")
    )
    path = pipeline.save(results, tmp_path)

    stream = results["stream"]
    assert stream["events"] == EVENTS
    assert sum(stream["kinds"].values()) == EVENTS
    assert stream["kinds"]["invalid"] > 0
    assert stream["kinds"]["undecodable"] > 0
    assert stream["duplicates"] > 0

    runs = results["runs"]
    assert set(runs) == {
        "worker_warning",
        "worker_info",
        "naive",
        "raw_kafka",
        "raw_store_sequential",
        "raw_store_partitioned",
    }
    for name in ("worker_warning", "worker_info"):
        run = runs[name]
        assert run["events"] == EVENTS
        assert run["exit_code"] == 0
        outcomes = run["outcomes"]
        assert outcomes["complete"], outcomes
        assert (outcomes["missing"], outcomes["extra"]) == (0, 0)
        assert outcomes["total"] == EVENTS
        assert outcomes["statuses_match_stream"], (outcomes, stream["kinds"])
        assert run["peak_rss_mib"] > 0
        assert run["series"][-1][1] == EVENTS  # the last sample saw everything committed
        assert {"worker", "kafka", "postgres", "other"} <= set(run["cpu_cores"])
    assert runs["naive"]["events"] == 150
    assert runs["naive"]["complete"]
    assert runs["raw_kafka"]["complete"]
    stored = EVENTS - stream["kinds"]["undecodable"]  # what reaches the store
    for name in ("raw_store_sequential", "raw_store_partitioned"):
        assert sum(runs[name]["outcomes_by_status"].values()) == stored
    for run in runs.values():
        assert run["events_per_second"] > 0

    latency = results["latency"]
    assert latency["sent"] == 900
    assert latency["complete"], latency
    assert latency["unmatched"] == 0
    assert latency["exit_code"] == 0
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]

    summary = results["summary"]
    assert [row["run"] for row in summary["table"]] == list(runs)
    assert summary["lower_raw_limit"]["name"] in {"kafka", "store"}
    assert "events/s" in pipeline.render(results)

    assert json.loads(path.read_text())["runs"].keys() == runs.keys()
    assert (tmp_path / "latest.json").exists()
    assert (tmp_path / "latest.png").stat().st_size > 10_000


async def test_history_benchmark_runs_at_tiny_sizes(services: Services, tmp_path: Path) -> None:
    """The cost-against-history part: every size drained with every outcome, database
    bytes and WAL per event, per-stage times, the latency run, the table and chart."""
    config = history.HistoryConfig(
        sizes=(400, 1_200), rate=200.0, latency_seconds=2.0, results_dir=tmp_path
    )
    found = await history.run(
        config,
        BenchServices(services.kafka_bootstrap, services.database_url, "tests"),
        lambda _: None,
    )
    assert [entry["size"] for entry in found["sizes"]] == [400, 1_200]
    for entry in found["sizes"]:
        drain = entry["drain"]
        assert drain["outcomes"]["complete"] and drain["outcomes"]["statuses_match_stream"]
        assert drain["exit_code"] == 0
        assert drain["wal_bytes_per_event"] > 0
        assert drain["stages"]["apply"]["batches"] > 0
        tables = entry["database"]["tables"]
        assert {"ocitags", "processed_events"} <= set(tables)
        assert entry["database"]["total"] > 0
        assert entry["latency"]["complete"], entry["latency"]
        assert entry["latency"]["stages"]["commit"]["batches"] > 0
        assert entry["latency"]["stage_timeline"]
    rows = found["summary"]["table"]
    assert all(row["bytes_per_event"] > 0 and row["cpu_other"] is not None for row in rows)
    assert found["summary"]["flat_ratio"] is not None
    assert "DB B/event" in history.render(found)
    draw_history(found, tmp_path / "history.png")
    assert (tmp_path / "history.png").stat().st_size > 10_000


async def test_watch_benchmark_runs_at_a_tiny_size(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "BENCH_WATCHERS": "4",
        "BENCH_WATCH_MEASURED": "2",
        "BENCH_WATCH_RATE": "20",
        "BENCH_WATCH_SECONDS": "2",
    }.items():
        monkeypatch.setenv(name, value)
    bench_services = BenchServices(services.kafka_bootstrap, services.database_url, "tests")
    results = await watch.run(bench_services)
    assert results["changes_published"] >= 30
    assert results["complete_watchers"] == 4  # every watcher got every change
    assert results["cut_off_or_failed"] == 0
    # applied → received: every change matched with its state record's timestamp
    assert results["latency_ms"]["samples"] == 2 * results["changes_published"]
    assert results["published_latency_ms"]["samples"] == 2 * results["changes_published"]
    assert results["api_rss_mib"]["peak"] > 0
    assert "p99 ms" in watch.render(results)


async def test_the_floor_comparison_runs_at_a_tiny_size(services: Services, tmp_path: Path) -> None:
    """The project beside the floor (bench/versus.py): both drain the same backlog with
    every outcome, both get a latency run on a fresh store (twice: two rounds), the table
    pairs them."""
    config = versus.VersusConfig(
        sizes=(600,), rate=100.0, latency_seconds=2.0, results_dir=tmp_path, rate_rounds=2
    )
    found = await versus.run(
        config, BenchServices(services.kafka_bootstrap, services.database_url, "tests")
    )
    (entry,) = found["sizes"]
    assert entry["stream"]["duplicates"] > 0
    for system in ("project", "floor"):
        drain = entry[system]
        assert drain["outcomes"]["complete"] and drain["outcomes"]["statuses_match_stream"]
        assert (drain["outcomes"]["missing"], drain["outcomes"]["extra"]) == (0, 0)
        assert drain["exit_code"] == 0
        assert drain["database"]["total"] > 0 and drain["database"]["pg_database_size"] > 0
        assert {"worker", "kafka", "postgres"} <= set(drain["cpu_cores"])
        latency = found["latency"][system]
        assert latency["complete"] and latency["exit_code"] == 0, latency
    # the floor keeps its own two tables, not the product's
    assert set(entry["floor"]["database"]["tables"]) == {"floor_seen", "floor_tags"}
    # random event times: late events are superseded (409) in the project's drain
    assert int(entry["project"]["outcomes"]["by_status"].get("409", 0)) > 0
    measures = {row["measure"] for row in found["table"]}
    assert "drain 600: events/s" in measures and "100/s, fresh store: p99 ms" in measures
    assert "project / floor" in versus.render(found)
    # the rate phases twice, the second in the opposite order: each round's ratios
    rounds = found["latency_rounds"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["p99_project_over_floor"] for r in rounds)
    assert "p99_project_over_floor" in found["latency_rounds"]["medians"]


async def test_state_benchmark_drains_with_the_state_topic_on_and_off(
    services: Services, tmp_path: Path
) -> None:
    config = pipeline.Config(events=EVENTS, tags=400, results_dir=tmp_path, info_run=False)
    bench_services = BenchServices(services.kafka_bootstrap, services.database_url, "tests")
    results = await state.run(config, bench_services, rounds=1)
    (round_,) = results["rounds"]
    for side in ("on", "off"):
        assert round_[side]["events"] == EVENTS
        assert round_[side]["exit_code"] == 0
        assert round_[side]["outcomes"]["complete"]
    # one state record per applied change: as many as 200 outcomes; none when off
    applied = round_["on"]["outcomes"]["by_status"]["200"]
    assert round_["on"]["state_records"] == applied > 0
    assert "state_records" not in round_["off"]
    assert round_["ratio"] > 0
    assert "median pace" in state.render(results)
