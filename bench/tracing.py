"""``make bench-tracing``: what tracing costs the worker's drain pace, in one run.

One backlog (``bench.pipeline``'s stream, ``BENCH_EVENTS``, default 20,000: small, the
machine is shared) drained by fresh workers, one after the other on their own databases
and groups, ``BENCH_TRACING_ROUNDS`` (3) rounds of: tracing off, and tracing on at 10 %
sampling (``parentbased_traceidratio``, 0.1, OTLP/HTTP to Jaeger all-in-one started by
``deploy/local/stack jaeger-start``), the order alternating by round. Medians per mode;
the off runs' spread is the noise. The records carry no ``traceparent``, so each batch's
and each event's span is a root sampled at 10 %.

Prints a table and writes ``bench/results/tracing-latest.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.pipeline import Config, Context, clean_up, load_stream, say, worker_run
from bench.services import Services, discover, unique

STACK = Path(__file__).resolve().parents[1] / "deploy" / "local" / "stack"
OTLP_PORT = os.environ.get("OCITAG_JAEGER_OTLP_PORT", "14318")
ON = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{OTLP_PORT}",
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.1",
    "OTEL_SERVICE_NAME": "ocitag-worker-bench",
}
MODES: dict[str, dict[str, str]] = {"off": {}, "on_10pct": ON}


def _figures(outcome: dict[str, Any]) -> dict[str, Any]:
    """Pace, and the worker's CPU per event (less sensitive to a shared machine than
    the pace: another process's load slows the drain more than it adds to its CPU)."""
    cores = outcome.get("cpu_cores") or {}
    worker = cores.get("worker")
    return {
        "events_per_second": outcome["events_per_second"],
        "worker_cpu_us_per_event": round(worker * outcome["seconds"] / outcome["events"] * 1e6, 1)
        if worker is not None
        else None,
        "other_cores": cores.get("other"),
        "exit_code": outcome.get("exit_code"),
    }


async def run(config: Config, services: Services, rounds: int) -> dict[str, Any]:
    ctx = Context(config, services, unique("bench"), log_dir=config.results_dir / "logs")
    results: dict[str, Any] = {
        "benchmark": "tracing",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": config.events,
        "rounds": rounds,
        "runs": [],
    }
    base_env = dict(config.worker_env)
    try:
        say(f"producing {config.events:,} events")
        await load_stream(ctx)
        for round_ in range(1, rounds + 1):
            # alternate which goes first: a drain after another one finds warmer caches
            order = list(MODES) if round_ % 2 else list(reversed(MODES))
            for mode in order:
                config.worker_env = {**base_env, **MODES[mode]}
                say(f"round {round_}: worker, tracing {mode}")
                label = f"{mode.replace('_', '-')}-{round_}"
                _, outcome = await worker_run(ctx, label, "warning")
                figures = {"mode": mode, "round": round_, **_figures(outcome)}
                results["runs"].append(figures)
                say(
                    f"  {figures['events_per_second']:,.0f} events/s, worker "
                    f"{figures['worker_cpu_us_per_event']} µs CPU per event, "
                    f"other {figures['other_cores']} cores"
                )
    finally:
        config.worker_env = base_env
        await clean_up(ctx)
    results["summary"] = summarise(results["runs"])
    return results


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median per mode, and on / off for pace and for the worker's CPU per event."""
    median: dict[str, dict[str, float | None]] = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        cpu = [r["worker_cpu_us_per_event"] for r in mine if r["worker_cpu_us_per_event"]]
        median[mode] = {
            "events_per_second": statistics.median(r["events_per_second"] for r in mine),
            "worker_cpu_us_per_event": statistics.median(cpu) if cpu else None,
        }
    paces = [r["events_per_second"] for r in runs if r["mode"] == "off"]
    return {
        "median": median,
        "pace_on_over_off": _ratio(median, "events_per_second"),
        "cpu_on_over_off": _ratio(median, "worker_cpu_us_per_event"),
        "off_spread": round(max(paces) / min(paces), 3) if paces else None,
    }


def _ratio(median: dict[str, dict[str, float | None]], figure: str) -> float | None:
    on, off = median["on_10pct"][figure], median["off"][figure]
    return round(on / off, 3) if on is not None and off else None


def render(results: dict[str, Any]) -> str:
    lines = [
        "| round | tracing | drain pace (events/s) | worker CPU per event (µs) | other (cores) |",
        "|--:|---|--:|--:|--:|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['round']} | {r['mode']} | {r['events_per_second']:,.0f} | "
            f"{r['worker_cpu_us_per_event']} | {r['other_cores']} |"
        )
    summary = results["summary"]
    lines.append(f"\non at 10 % / off, median drain pace: {summary['pace_on_over_off']}")
    lines.append(f"on at 10 % / off, median worker CPU per event: {summary['cpu_on_over_off']}")
    lines.append(f"slowest to fastest off run (the noise): {summary['off_spread']}")
    return "\n".join(lines)


def main() -> None:
    config = Config.from_env()
    if "BENCH_EVENTS" not in os.environ:
        config.events = 20_000
    subprocess.run([str(STACK), "jaeger-start"], check=True)
    rounds = int(os.environ.get("BENCH_TRACING_ROUNDS", "3"))
    results = asyncio.run(run(config, discover(), rounds))
    config.results_dir.mkdir(parents=True, exist_ok=True)
    path = config.results_dir / "tracing-latest.json"
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(render(results))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
