"""The project against the floor (issue "Close to the floor"), side by side in one run:
``make bench-floor`` (and the last part of ``make bench``).

The floor (bench/floor.py) is the leanest durable batched consumer doing the same
durable work on the same libraries; whatever the worker costs beyond it is the price of
its guarantees. Both run as processes on the same broker and database server:

1. per history size (BENCH_FLOOR_SIZES, default 50,000 and 1,000,000): one backlog of the
   issue's shape — N/4 tags drawn uniformly, random event times (each moved back by up
   to the backlog's whole span), 5 % duplicates (redeliveries of a recent record), all
   valid, 10 % binary mode — produced once to a fresh topic, then drained by the worker
   (``python -m worker run``, log level warning) into a fresh migrated database and by
   the floor into a fresh database of its own two tables, each with its own group and
   outcome topic. Per drain: events/s (first fetch to last commit; and at 75-95 %
   committed), CPU per event of the process under test, of Kafka and of PostgreSQL
   (/proc, the broker's and the postmaster's process trees), database bytes per event
   (every table with indexes and TOAST; and ``pg_database_size``), and the outcome
   topic's completeness (one outcome per input);
2. on a fresh store (new database, empty input topic, new group) for each: BENCH_RATE
   (2,000) events/s of the same shape for BENCH_FLOOR_LATENCY_SECONDS (=
   BENCH_LATENCY_SECONDS, 60): p50/p99/max from creation to outcome received, and CPU
   per event.

With BENCH_FLOOR_BASELINE set to another checkout of the worker (a worktree of the
commit before a change), that checkout's worker runs too, as the system ``before``, on
the same backlog and rate in the same run: the A/B of a change, with both against the
floor (its databases are migrated by this checkout: the two must share migrations).
BENCH_WORKER_ENV (JSON, e.g. '{"OCITAG_FETCH_MIN_BYTES": "32768"}') and BENCH_CONSUMER_OVERRIDES
(JSON keyword arguments for the consumer, e.g. '{"fetch_min_bytes": 4096}', through
bench.patched_worker) go to the project's worker only: a what-if against the before.
BENCH_PROFILE=1: py-spy samples the project's worker during its rate phase (the buckets
of bench/profile.py, per event and per batch: where a small batch's CPU goes);
BENCH_CALLS=1: the project's worker runs its rate phase under cProfile (bench.patched_worker)
for the functions called most per batch: counts, not times (it slows the worker down).
BENCH_FLOOR_PROJECT=<checkout>: the project's worker from that checkout rather than this
one (so that this one can change while an A/B runs). BENCH_FLOOR_SIZES=none runs the
rate phase alone. BENCH_FLOOR_TOGETHER=1 (with
BENCH_FLOOR_BASELINE): the before's and the project's rate phases run at the same time,
each at BENCH_RATE on its own topics and database (the floor after them, alone): a
paired A/B of the worker's own CPU per event on a machine whose other load comes and
goes (their services' CPU is then shared, and not told apart).
BENCH_FLOOR_RATE_ROUNDS=N (1): the rate phases N times, every system in each round, the
order reversed every other round (the machine's drift falls on all): the table shows the
first round, then a table of each round's p50, p99 and host steal per system and their
ratios, with the medians of the rounds' ratios (the issue's p99 goal is one such ratio, which varies
several-fold from run to run on a shared machine).

The worker runs first in every pair. Read every figure with the ``other`` CPU of its
phase (someone else's work on the machine). Results: a table (floor, project,
project / floor) on stdout, JSON in ``bench/results/floor-*.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import floor, pipeline
from bench import profile as spy
from bench.history import database_bytes, late_pace
from bench.report import ratio, table
from bench.runner import Topics, WorkerProcess, read_outcomes
from bench.services import (
    RESULTS,
    Services,
    code_version,
    create_database,
    create_topics,
    discover,
    env_float,
    env_int,
    machine,
    unique,
    write_results,
)
from bench.stream import Generator, StreamShape

SIZES = (50_000, 1_000_000)
#: the backlog's events are this far apart in time (bench.pipeline.load_stream)
STEP_SECONDS = 0.005
SYSTEMS = ("floor", "project")
#: the order they run in (``before`` only with BENCH_FLOOR_BASELINE)
RUN_ORDER = ("before", "project", "floor")


@dataclass(frozen=True)
class VersusConfig:
    sizes: tuple[int, ...] = SIZES
    rate: float = 2_000.0
    latency_seconds: float = 60.0
    partitions: int = 6
    seed: int = 20_261_128
    results_dir: Path = RESULTS
    #: another checkout of the worker, run as the system ``before``
    baseline: Path | None = None
    #: the project's worker only: extra settings, and its consumer's keyword arguments
    project_env: dict[str, str] = field(default_factory=dict)
    project_consumer: dict[str, Any] = field(default_factory=dict)
    #: py-spy on the project's worker during its rate phase
    profile: bool = False
    #: cProfile's call counts of the project's worker during its rate phase
    calls: bool = False
    #: the before's and the project's rate phases at the same time (a paired A/B)
    together: bool = False
    #: the checkout whose worker is the project's (None: this one)
    project_checkout: Path | None = None
    #: how many times the rate phases run (each round every system, alternating order)
    rate_rounds: int = 1
    #: the rate phase's input topic's partitions (0: ``partitions``); the outcome, state
    #: and dead-letter topics keep ``partitions``
    input_partitions: int = 0

    @property
    def systems(self) -> tuple[str, ...]:
        return tuple(s for s in RUN_ORDER if s != "before" or self.baseline is not None)

    @classmethod
    def from_env(cls) -> VersusConfig:
        raw = os.environ.get("BENCH_FLOOR_SIZES", "").replace(" ", "").replace("_", "")
        sizes: tuple[int, ...] = ()  # "none": the rate phase alone
        if raw != "none":
            sizes = tuple(int(s) for s in raw.split(",") if s) or SIZES
        return cls(
            sizes=sizes,
            rate=env_float("BENCH_RATE", 2_000.0),
            latency_seconds=env_float(
                "BENCH_FLOOR_LATENCY_SECONDS", env_float("BENCH_LATENCY_SECONDS", 60.0)
            ),
            seed=env_int("BENCH_SEED", 20_261_128),
            results_dir=Path(os.environ.get("BENCH_RESULTS", str(RESULTS))),
            baseline=Path(os.environ["BENCH_FLOOR_BASELINE"])
            if os.environ.get("BENCH_FLOOR_BASELINE")
            else None,
            project_env=json.loads(os.environ.get("BENCH_WORKER_ENV") or "{}"),
            project_consumer=json.loads(os.environ.get("BENCH_CONSUMER_OVERRIDES") or "{}"),
            profile=os.environ.get("BENCH_PROFILE") == "1",
            calls=os.environ.get("BENCH_CALLS") == "1",
            together=os.environ.get("BENCH_FLOOR_TOGETHER") == "1",
            project_checkout=Path(os.environ["BENCH_FLOOR_PROJECT"])
            if os.environ.get("BENCH_FLOOR_PROJECT")
            else None,
            rate_rounds=max(1, env_int("BENCH_FLOOR_RATE_ROUNDS", 1)),
            partitions=max(1, env_int("BENCH_FLOOR_PARTITIONS", 6)),
            input_partitions=max(0, env_int("BENCH_FLOOR_INPUT_PARTITIONS", 0)),
        )


def shape_for(size: int) -> StreamShape:
    """The issue's backlog: N/4 tags, random event times, 5 % duplicates."""
    return StreamShape(
        tags=max(1, size // 4),
        duplicates=0.05,
        out_of_order=0.0,
        invalid=0.0,
        zipf=0.0,
        time_spread=size * STEP_SECONDS,
    )


class FloorProcess(WorkerProcess):
    """The floor as a process, with the worker's environment (bench.floor reads it)."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.floor"]


@dataclass(frozen=True)
class FloorSetup(pipeline.WorkerSetup):
    def process(self, ctx: pipeline.Context, suffix: str = "") -> WorkerProcess:
        return FloorProcess(
            ctx.services.kafka,
            self.database_url,
            self.topics,
            self.group,
            self.log_level,
            ctx.log_dir / f"{ctx.prefix}-{self.label}{suffix}.log",
        )


@dataclass(frozen=True)
class BaselineSetup(pipeline.WorkerSetup):
    """The worker of another checkout (BENCH_FLOOR_BASELINE)."""

    checkout: Path = Path()

    def process(self, ctx: pipeline.Context, suffix: str = "") -> WorkerProcess:
        worker = super().process(ctx, suffix)
        worker.checkout = self.checkout
        # nothing written into the other checkout
        worker.extra_env = {**worker.extra_env, "PYTHONDONTWRITEBYTECODE": "1"}
        return worker


@dataclass(frozen=True)
class ProjectSetup(pipeline.WorkerSetup):
    """This checkout's worker, with the what-if settings and consumer arguments."""

    env: Mapping[str, str] = field(default_factory=dict)
    consumer: Mapping[str, Any] = field(default_factory=dict)
    checkout: Path | None = None

    def process(self, ctx: pipeline.Context, suffix: str = "") -> WorkerProcess:
        worker = super().process(ctx, suffix)
        if self.checkout is not None:
            worker.checkout = self.checkout
            worker.extra_env = {**worker.extra_env, "PYTHONDONTWRITEBYTECODE": "1"}
        worker.extra_env = {**worker.extra_env, **self.env}
        worker.consumer_overrides = {**worker.consumer_overrides, **self.consumer}
        return worker


async def _setup(
    ctx: pipeline.Context, system: str, label: str, config: VersusConfig
) -> pipeline.WorkerSetup:
    """A fresh database (the worker's migrated one, or the floor's two tables), outcome
    topic and group."""
    topics: Topics = await ctx.new_topics(label)
    group = f"{ctx.prefix}-{label}"
    baseline = config.baseline
    if system == "project":
        url = await ctx.new_database(label)
        return ProjectSetup(
            label,
            "warning",
            url,
            topics,
            group,
            config.project_env,
            config.project_consumer,
            config.project_checkout,
        )
    if system == "before":
        if baseline is None:
            raise ValueError("the system before needs BENCH_FLOOR_BASELINE")
        url = await ctx.new_database(label)
        return BaselineSetup(label, "warning", url, topics, group, baseline)
    name = f"{ctx.prefix}_{label}"
    ctx.databases.append(name)
    url = await create_database(ctx.services.database_url, name, migrated=False)
    await floor.create_schema(url)
    return FloorSetup(label, "warning", url, topics, group)


async def database_size(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


async def drain(
    ctx: pipeline.Context, system: str, size: int, config: VersusConfig
) -> dict[str, Any]:
    setup = await _setup(ctx, system, f"{system}{size}", config)
    process = setup.process(ctx)
    profile_to = None
    if config.profile and system == "project":
        profile_to = config.results_dir / "profile-drain-latest.txt"
        profile_to.parent.mkdir(parents=True, exist_ok=True)
    process.start()
    result: dict[str, Any] = {"system": system}
    try:
        result.update(await pipeline.drain(process, ctx, profile_to))
    finally:
        result["exit_code"] = process.stop()
    if profile_to is not None:
        result["profile"] = rate_profile(
            profile_to, size, result["worker_batches"]["count"] or None, "drain"
        )
    result["late_events_per_second"] = late_pace(result["series"], result["events"])
    result.pop("series")
    result["outcomes"] = pipeline.check_outcomes(
        ctx,
        await read_outcomes(ctx.services.kafka, setup.topics.outcomes, ctx.config.partitions),
    )
    result["database"] = await database_bytes(setup.database_url)
    result["database"].pop("stats", None)
    result["database"]["pg_database_size"] = await database_size(setup.database_url)
    return result


async def one_size(config: VersusConfig, services: Services, size: int) -> dict[str, Any]:
    base = pipeline.Config(
        events=size,
        tags=max(1, size // 4),
        partitions=config.partitions,
        seed=config.seed,
        results_dir=config.results_dir,
        chart=False,
    )
    ctx = pipeline.Context(
        base, services, unique(f"floor{size}"), log_dir=config.results_dir / "logs"
    )
    out: dict[str, Any] = {"size": size}
    try:
        pipeline.say(f"floor vs project, {size:,} events: producing")
        out["stream"] = await pipeline.load_stream(ctx, shape_for(size))
        for system in config.systems:
            pipeline.say(f"{size:,}: {system} draining")
            out[system] = await drain(ctx, system, size, config)
            pipeline.say(f"{size:,}: {system} {out[system]['events_per_second']:,.0f} events/s")
    finally:
        await pipeline.clean_up(ctx)
    return out


async def fresh_latency(config: VersusConfig, services: Services, system: str) -> dict[str, Any]:
    """``rate`` events/s for ``latency_seconds`` to a fresh store of ``system``."""
    sent = max(4, int(config.rate * config.latency_seconds))
    base = pipeline.Config(
        events=0,
        tags=sent // 4,
        rate=config.rate,
        latency_seconds=config.latency_seconds,
        partitions=config.partitions,
        input_partitions=config.input_partitions,
        seed=config.seed,
        results_dir=config.results_dir,
        chart=False,
    )
    ctx = pipeline.Context(
        base, services, unique(f"lat{system}"), log_dir=config.results_dir / "logs"
    )
    ctx.generator = Generator(shape_for(sent), config.seed, ctx.prefix)
    try:
        await create_topics(services.kafka, [ctx.input_topic], base.input_topic_partitions)
        ctx.topics.append(ctx.input_topic)
        setup = await _setup(ctx, system, f"{system}latency", config)
        pipeline.say(
            f"fresh store, {system}: {config.rate:,.0f} events/s for {config.latency_seconds:g} s"
        )
        profile_to = None
        if config.profile and system == "project":
            profile_to = config.results_dir / "profile-rate-latest.txt"
            profile_to.parent.mkdir(parents=True, exist_ok=True)
        calls_to = config.results_dir / "calls-rate-latest.pstats"
        if config.calls and isinstance(setup, ProjectSetup):
            calls_to.parent.mkdir(parents=True, exist_ok=True)
            calls_to.unlink(missing_ok=True)
            setup = replace(setup, env={**setup.env, "BENCH_CALLS_TO": str(calls_to)})
        result = await pipeline.latency_run(ctx, setup, profile_to)
    finally:
        await pipeline.clean_up(ctx)
    # the worker's batches at the rate (its apply stage's count; the floor has none)
    stages = result.get("stages") or {}
    batches = stages.get("apply", {}).get("batches")
    result["events_per_batch"] = round(result["sent"] / batches, 1) if batches else None
    commits = stages.get("commit", {}).get("batches")
    result["commits_per_batch"] = round(commits / batches, 3) if batches and commits else None
    if profile_to is not None:
        result["profile"] = rate_profile(profile_to, result["sent"], batches)
    if config.calls and system == "project" and batches and calls_to.exists():
        result["calls"] = {"batches": batches, "top": spy.calls(calls_to, batches)}
    for key in ("timeline", "stage_timeline"):
        result.pop(key, None)
    return result


async def latencies(
    config: VersusConfig, services: Services, *, reverse: bool = False
) -> dict[str, Any]:
    """Each system's rate phase, one after another (``reverse``: in the opposite order;
    the before's and the project's at the same time when ``together``)."""
    if not (config.together and "before" in config.systems):
        order = config.systems[::-1] if reverse else config.systems
        found = {s: await fresh_latency(config, services, s) for s in order}
        return {s: found[s] for s in config.systems}
    before, project = await asyncio.gather(
        fresh_latency(config, services, "before"), fresh_latency(config, services, "project")
    )
    return {
        "before": before,
        "project": project,
        "floor": await fresh_latency(config, services, "floor"),
    }


def rate_rounds(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each round's p50, p99 and the host's steal (cores) per system, each round's ratios
    (project over floor, and over before when it ran), and the medians of those
    ratios."""
    per_round: list[dict[str, Any]] = []
    for number, found in enumerate(rounds, 1):
        row: dict[str, Any] = {"round": number}
        for system, lat in found.items():
            row[f"{system}_p50_ms"] = lat.get("p50_ms")
            row[f"{system}_p99_ms"] = lat.get("p99_ms")
            # the host's steal during the phase: a round with steal measured the host
            row[f"{system}_steal_cores"] = (lat.get("cpu_cores") or {}).get("steal")
        for other in ("floor", "before"):
            if other in found:
                for q in ("p50", "p99"):
                    row[f"{q}_project_over_{other}"] = ratio(
                        found["project"].get(f"{q}_ms"), found[other].get(f"{q}_ms")
                    )
        per_round.append(row)
    keys = [k for k in per_round[0] if "_over_" in k]
    medians = {
        k: round(statistics.median(v), 2)
        for k in keys
        if (v := [r[k] for r in per_round if r.get(k) is not None])
    }
    return {"rounds": per_round, "medians": medians}


def rate_profile(
    path: Path, events: int, batches: int | None, phase: str = "rate"
) -> dict[str, Any]:
    """bench/profile.py's breakdown of a phase's samples (the rate's, or a drain's), with
    each bucket's CPU per batch beside its CPU per event (at low rates the batch is the
    unit of cost)."""
    with path.open() as lines:
        found = spy.breakdown(spy.parse(lines), events)
    if batches:
        found["batches"] = batches
        found["us_per_batch"] = round(found["cpu_seconds"] / batches * 1e6)
        for bucket in found["buckets"].values():
            bucket["us_per_batch"] = round(bucket["cpu_seconds"] / batches * 1e6)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (path.parent / f"profile-{phase}-{stamp}.txt").write_text(path.read_text())
    return found


async def run(config: VersusConfig, services: Services) -> dict[str, Any]:
    results: dict[str, Any] = {
        "benchmark": "floor",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {
            **asdict(config),
            "sizes": list(config.sizes),
            "results_dir": str(config.results_dir),
            "baseline": str(config.baseline) if config.baseline else None,
            "project_checkout": str(config.project_checkout) if config.project_checkout else None,
        },
        "machine": machine(),
        "code": code_version(),
        "sizes": [],
    }
    for size in config.sizes:
        results["sizes"].append(await one_size(config, services, size))
    if config.latency_seconds > 0:
        rounds = [
            await latencies(config, services, reverse=bool(i % 2))
            for i in range(config.rate_rounds)
        ]
        results["latency"] = rounds[0]
        if len(rounds) > 1:
            results["latency_rounds"] = rate_rounds(rounds)
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["table"] = rows(results)
    return results


def _us(cores: float | None, events_per_second: float | None) -> float | None:
    if cores is None or not events_per_second:
        return None
    return round(cores / events_per_second * 1e6, 1)


def _present(entry: dict[str, Any]) -> tuple[str, ...]:
    """The systems of a result, in the table's order (``before`` when it ran)."""
    return tuple(s for s in ("floor", "before", "project") if s in entry)


def _without_history(database: dict[str, Any]) -> int:
    """The tables' bytes less the history's (``ocitag_history*``, issue 22's own budget).

    The floor keeps no history, so its figure is its total; the project's is the record
    the floor's is compared with (the idempotency record, the tags, the outcome sources).
    """
    tables = database.get("tables", {})
    history = sum(int(t["total"]) for n, t in tables.items() if n.startswith("ocitag_history"))
    return int(database["total"]) - history


def _drain_rows(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    size = entry["size"]
    per: dict[str, dict[str, Any]] = {}
    for system in _present(entry):
        run = entry[system]
        cpu, eps, db = run["cpu_cores"], run["events_per_second"], run["database"]
        per[system] = {
            "events/s": eps,
            "events/s at 75-95 %": run.get("late_events_per_second"),
            "CPU µs/event, the process": _us(cpu.get("worker"), eps),
            "CPU µs/event, Kafka": _us(cpu.get("kafka"), eps),
            "CPU µs/event, PostgreSQL": _us(cpu.get("postgres"), eps),
            "DB bytes/event (tables)": round(db["total"] / size),
            "DB bytes/event (pg_database_size)": round(db["pg_database_size"] / size),
            "DB bytes/event (tables, history aside)": round(_without_history(db) / size),
            "CPU other, cores": cpu.get("other"),
        }
    return [
        (f"drain {size:,}: {measure}", {s: per[s][measure] for s in per})
        for measure in per["floor"]
    ]


def _latency_rows(latency: dict[str, Any], rate: float) -> list[tuple[str, dict[str, Any]]]:
    per: dict[str, dict[str, Any]] = {}
    for system in _present(latency):
        lat = latency[system]
        cpu, achieved = lat.get("cpu_cores") or {}, lat.get("achieved_rate")
        per[system] = {
            "p50 ms": lat.get("p50_ms"),
            "p99 ms": lat.get("p99_ms"),
            "max ms": lat.get("max_ms"),
            "CPU µs/event, the process": _us(cpu.get("worker"), achieved),
            "CPU µs/event, Kafka": _us(cpu.get("kafka"), achieved),
            "CPU µs/event, PostgreSQL": _us(cpu.get("postgres"), achieved),
            "CPU other, cores": cpu.get("other"),
            "events per batch": lat.get("events_per_batch"),
            "offset commits per batch": lat.get("commits_per_batch"),
            "CPU µs/batch, the process": round(us * per_batch)
            if (us := _us(cpu.get("worker"), achieved))
            and (per_batch := lat.get("events_per_batch"))
            else None,
        }
    return [
        (f"{rate:,.0f}/s, fresh store: {measure}", {s: per[s][measure] for s in per})
        for measure in per["floor"]
    ]


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for entry in results["sizes"]:
        found += _drain_rows(entry)
    if "latency" in results:
        found += _latency_rows(results["latency"], results["config"]["rate"])
    table = []
    for measure, values in found:
        row = {"measure": measure, **values}
        counted = not measure.endswith("other, cores")
        row["project_over_floor"] = ratio(values["project"], values["floor"]) if counted else None
        if "before" in values:
            row["project_over_before"] = (
                ratio(values["project"], values["before"]) if counted else None
            )
        table.append(row)
    return table


def render_rounds(found: dict[str, Any]) -> str:
    """BENCH_FLOOR_RATE_ROUNDS's table: each round, then the medians of its ratios."""
    columns = list(found["rounds"][0])
    return (
        f"the rate phases, {len(found['rounds'])} rounds (the table above is round 1; "
        "even rounds ran in the opposite order):\n"
        + table(
            columns,
            [[r.get(c) for c in columns] for r in found["rounds"]]
            + [["median", *(found["medians"].get(c) for c in columns[1:])]],
        )
    )


def _latency_notes(results: dict[str, Any]) -> list[str]:
    """Each rate phase's completeness, and its profile and calls when taken."""
    lines: list[str] = []
    for system, lat in (results.get("latency") or {}).items():
        lines.append(
            f"fresh store {system}: offered {lat['offered_rate']:,.0f}/s, achieved "
            f"{lat['achieved_rate']:,}/s, sent {lat['sent']:,}, matched {lat['matched']:,}, "
            f"complete={lat['complete']}"
        )
        if "profile" in lat:
            per_batch = lat["profile"].get("us_per_batch")
            lines += [
                "",
                f"profile of the {system} worker at the rate (py-spy, on-CPU "
                f"samples; {per_batch} µs a batch):",
                spy.render(lat["profile"]),
            ]
        if "calls" in lat:
            found = lat["calls"]
            lines += [
                "",
                f"calls per batch of the {system} worker at the rate (cProfile, "
                f"{found['batches']:,} batches):",
                table(
                    ["function", "calls", "per batch"],
                    [[c["function"], c["calls"], c["per_batch"]] for c in found["top"]],
                ),
            ]
    return lines


def render(results: dict[str, Any]) -> str:
    ab = any("before" in r for r in results["table"])
    systems = ("floor", "before", "project") if ab else SYSTEMS
    ratios = ("project_over_floor", "project_over_before") if ab else ("project_over_floor",)
    lines = [
        table(
            [
                "same run",
                *systems,
                "project / floor",
                *(["project / before"] if ab else []),
            ],
            [
                [r["measure"], *(r.get(s) for s in systems), *(r.get(k) for k in ratios)]
                for r in results["table"]
            ],
        )
    ]
    if "latency_rounds" in results:
        lines += ["", render_rounds(results["latency_rounds"])]
    if ab:
        lines.append(f"before: the worker of {results['config']['baseline']}")
    what_if = {k: v for k in ("project_env", "project_consumer") if (v := results["config"].get(k))}
    if what_if:
        lines.append(f"project: with {json.dumps(what_if)}")
    for entry in results["sizes"]:
        for system in _present(entry):
            o = entry[system]["outcomes"]
            lines.append(
                f"{entry['size']:,} {system}: outcomes {o['total']:,} {o['by_status']}, "
                f"complete={o['complete']} (missing {o['missing']}, extra {o['extra']}), "
                f"exit code {entry[system].get('exit_code')}"
            )
    for entry in results["sizes"]:
        if "profile" in entry.get("project", {}):
            found = entry["project"]["profile"]
            lines += [
                "",
                f"profile of the project worker draining {entry['size']:,} (py-spy, on-CPU "
                f"samples; {found.get('us_per_batch')} µs a batch):",
                spy.render(found),
            ]
    lines += _latency_notes(results)
    code = results.get("code", {})
    lines.append(
        f"worker code: {code.get('commit')} {code.get('subject')!r}"
        + (" (worker/ modified)" if code.get("worker_modified") else "")
        + f"; load average at start {results['machine']['load_average_1m_at_start']}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    del argv
    config = VersusConfig.from_env()
    services = discover()
    results = asyncio.run(run(config, services))
    path = write_results("floor", results, config.results_dir)
    print("\nthe project against the floor (bench/floor.py), same run:")
    print(render(results))
    print(f"\nresults: {path} (and floor-latest.json in {config.results_dir})")


if __name__ == "__main__":
    main()
