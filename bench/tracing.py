"""``make bench-tracing``: what tracing costs the worker's drain pace, in one run.

One backlog (``bench.pipeline``'s stream, ``BENCH_EVENTS``, default 20,000: small, the
machine is shared) drained by fresh workers, one after the other on their own databases
and groups: tracing off, tracing on at 10 % sampling (``parentbased_traceidratio``,
0.1, OTLP/HTTP to Jaeger all-in-one started by ``deploy/local/stack jaeger-start``), and
off again (the two off runs give the noise between two identical runs). The records carry
no ``traceparent``, so each batch's and each event's span is a root sampled at 10 %.

Prints a table and writes ``bench/results/tracing-latest.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.pipeline import Config, Context, clean_up, load_stream, say, worker_run
from bench.services import Services, discover, unique

STACK = Path(__file__).resolve().parents[1] / "deploy" / "local" / "stack"
OTLP_PORT = os.environ.get("OCITAG_JAEGER_OTLP_PORT", "14318")
RUNS: tuple[tuple[str, dict[str, str]], ...] = (
    ("off", {}),
    (
        "on_10pct",
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{OTLP_PORT}",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
            "OTEL_SERVICE_NAME": "ocitag-worker-bench",
        },
    ),
    ("off_again", {}),
)


async def run(config: Config, services: Services) -> dict[str, Any]:
    ctx = Context(config, services, unique("bench"), log_dir=config.results_dir / "logs")
    results: dict[str, Any] = {
        "benchmark": "tracing",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": config.events,
        "runs": {},
    }
    base_env = dict(config.worker_env)
    try:
        say(f"producing {config.events:,} events")
        await load_stream(ctx)
        for label, env in RUNS:
            config.worker_env = {**base_env, **env}
            say(f"worker, tracing {label}")
            _, outcome = await worker_run(ctx, label.replace("_", "-"), "warning")
            results["runs"][label] = {
                "events_per_second": outcome["events_per_second"],
                "cpu": outcome.get("cpu"),
                "exit_code": outcome.get("exit_code"),
            }
            say(f"  {outcome['events_per_second']:,.0f} events/s")
    finally:
        config.worker_env = base_env
        await clean_up(ctx)
    runs = results["runs"]
    off = (runs["off"]["events_per_second"] + runs["off_again"]["events_per_second"]) / 2
    results["on_over_off"] = round(runs["on_10pct"]["events_per_second"] / off, 3)
    results["off_again_over_off"] = round(
        runs["off_again"]["events_per_second"] / runs["off"]["events_per_second"], 3
    )
    return results


def render(results: dict[str, Any]) -> str:
    lines = ["| run | drain pace (events/s) |", "|---|--:|"]
    for label, values in results["runs"].items():
        lines.append(f"| {label} | {values['events_per_second']:,.0f} |")
    lines.append(f"\non at 10 % / mean of the two off runs: {results['on_over_off']}")
    lines.append(
        f"off again / off (the noise between identical runs): {results['off_again_over_off']}"
    )
    return "\n".join(lines)


def main() -> None:
    config = Config.from_env()
    if "BENCH_EVENTS" not in os.environ:
        config.events = 20_000
    subprocess.run([str(STACK), "jaeger-start"], check=True)
    results = asyncio.run(run(config, discover()))
    config.results_dir.mkdir(parents=True, exist_ok=True)
    path = config.results_dir / "tracing-latest.json"
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(render(results))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
