"""The state topic's cost (``make bench-state``): the worker's drain pace with the state
topic on and off, in the same run, over the same backlog (bench.pipeline's stream and
drain).

Each round drains the whole backlog twice, each time with its own database, group and
outcome topic: once with ``OCITAG_STATE_TOPIC`` set (the default), once with it empty
(off). The rounds alternate which goes first (on, off; then off, on; …) so that a trend
on the shared machine (someone else's build starting) does not favour one side. The
result is the ratio of the paces (on / off) per round and their median, with the CPU
the worker and Kafka used, and the state records the "on" run wrote.

Knobs (environment): BENCH_EVENTS (100000), BENCH_TAGS (20000), BENCH_ROUNDS (1),
BENCH_SEED, BENCH_RESULTS. The issue's size is 1,000,000 events (BENCH_EVENTS=1000000:
about 10 minutes per drain on the 2-core machine).
"""

from __future__ import annotations

import asyncio
import os
import statistics
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.pipeline import Config, Context, clean_up, load_stream, say, worker_run
from bench.report import table
from bench.services import (
    RESULTS,
    Services,
    code_version,
    discover,
    env_int,
    machine,
    unique,
    write_results,
)


async def written(kafka: str, topic: str, partitions: int) -> int:
    """Records written to ``topic``: the sum of its end offsets (nothing is compacted
    within the minimum compaction lag of an hour)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def drain_with(ctx: Context, label: str, state: bool) -> dict[str, Any]:
    """One drain of the backlog, the state topic on or off."""
    base = ctx.config
    env = {**base.worker_env, **({} if state else {"OCITAG_STATE_TOPIC": ""})}
    ctx.config = replace(base, worker_env=env)
    try:
        setup, result = await worker_run(ctx, label, "warning")
    finally:
        ctx.config = base
    result["state_topic"] = state
    if state:
        ctx.topics.append(setup.topics.state)  # created by the worker: dropped at the end
        result["state_records"] = await written(
            ctx.services.kafka, setup.topics.state, base.partitions
        )
    return result


async def run(config: Config, services: Services, rounds: int) -> dict[str, Any]:
    ctx = Context(config, services, unique("bench"), log_dir=config.results_dir / "logs")
    results: dict[str, Any] = {
        "benchmark": "state",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {"events": config.events, "tags": config.tags, "rounds": rounds},
        "machine": machine(),
        "code": code_version(),
        "rounds": [],
    }
    try:
        say(f"producing {config.events:,} events over {config.tags:,} tags")
        results["stream"] = await load_stream(ctx)
        for number in range(1, rounds + 1):
            order = (True, False) if number % 2 else (False, True)
            drained = {}
            for state in order:
                label = f"r{number}-{'on' if state else 'off'}"
                say(f"round {number}: state topic {'on' if state else 'off'}")
                drained[state] = await drain_with(ctx, label, state)
                say(f"  {drained[state]['events_per_second']:,.0f} events/s")
            on, off = drained[True], drained[False]
            results["rounds"].append(
                {
                    "on": on,
                    "off": off,
                    "first": "on" if order[0] else "off",
                    "ratio": round(on["events_per_second"] / off["events_per_second"], 3),
                    "cpu_ratio": round(cpu_ms_per_event(on) / cpu_ms_per_event(off), 3),
                }
            )
    finally:
        await clean_up(ctx)
    results["summary"] = summarise(results["rounds"])
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def cpu_ms_per_event(run: dict[str, Any]) -> float:
    """The worker's CPU per event: what the state topic adds to the worker's own work,
    less sensitive than the pace to what else the shared machine runs."""
    seconds = float(run["cpu_cores"]["worker"]) * float(run["seconds"])
    return round(seconds / int(run["events"]) * 1000, 4)


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ratio = round(statistics.median(r["ratio"] for r in rounds), 3)
    cpu_ratio = round(statistics.median(r["cpu_ratio"] for r in rounds), 3)
    return {
        "median_ratio": ratio,
        "cost_percent": round((1 - ratio) * 100, 1),
        "median_cpu_ratio": cpu_ratio,
        "cpu_cost_percent": round((cpu_ratio - 1) * 100, 1),
    }


def _cores(run: dict[str, Any], name: str) -> float | None:
    value = run.get("cpu_cores", {}).get(name)
    return None if value is None else round(float(value), 2)


def render(results: dict[str, Any]) -> str:
    rows = []
    for number, round_ in enumerate(results["rounds"], 1):
        for side in ("on", "off"):
            run_ = round_[side]
            rows.append(
                [
                    number,
                    side,
                    round(run_["events_per_second"]),
                    round(run_["seconds"], 1),
                    run_.get("state_records", 0),
                    cpu_ms_per_event(run_),
                    _cores(run_, "worker"),
                    _cores(run_, "kafka"),
                    _cores(run_, "other"),
                    round_["ratio"] if side == "on" else None,
                    round_["cpu_ratio"] if side == "on" else None,
                ]
            )
    headers = [
        "round", "state topic", "events/s", "seconds", "state records", "worker CPU ms/event",
        "worker cores", "kafka cores", "other cores", "pace on/off", "CPU on/off",
    ]  # fmt: skip
    summary = results["summary"]
    return (
        f"{table(headers, rows)}\n\n{results['config']['events']:,} events; median pace "
        f"on/off {summary['median_ratio']} (cost {summary['cost_percent']} %), median worker "
        f"CPU per event on/off {summary['median_cpu_ratio']} (+{summary['cpu_cost_percent']} "
        "%). A shared machine: read the figures with their 'other cores'."
    )


def main() -> None:
    config = replace(
        Config.from_env(),
        events=env_int("BENCH_EVENTS", 100_000),
        tags=env_int("BENCH_TAGS", 20_000),
        info_run=False,
        chart=False,
        results_dir=Path(os.environ.get("BENCH_RESULTS", RESULTS)),
    )
    results = asyncio.run(run(config, discover(), max(1, env_int("BENCH_ROUNDS", 1))))
    path = write_results("state", results, config.results_dir)
    print()
    print(render(results))
    print(f"\nresults: {path} (and state-latest.json)")


if __name__ == "__main__":
    main()
