"""The pipeline benchmark (``make bench``): the real worker against the naive baseline
and the raw limits of the services, on the same Kafka and PostgreSQL, in one run.

1. A realistic stream (bench.stream) is produced to a fresh input topic before anything
   is timed.
2. Throughput: ``python -m worker run`` (default settings but for topics, group, database,
   HTTP port and log level) drains the backlog; events/s from its first fetch (/metrics:
   ``ocitag_events_consumed_total`` > 0) to its last commit (the group's committed
   offsets equal the end offsets; the time is the worker's
   ``ocitag_last_commit_timestamp_seconds``). Every input must have its outcome. Peak RSS
   is the worker's VmHWM. Done at log level warning, and again at info (the canonical
   per-event log line is part of the product).
3. Latency: with the warning-level worker caught up, events are produced at a fixed rate;
   each one's latency runs from its creation (just before it is sent; its ``time``
   attribute carries the same instant) to the arrival of its outcome at a consumer of
   the outcome topic.
4. The naive baseline (bench.naive) on the first BENCH_NAIVE_EVENTS records, and the raw
   limits (bench.raw): Kafka alone, PostgreSQL alone.

Knobs (environment): BENCH_EVENTS (200000), BENCH_TAGS (50000), BENCH_RATE (2000),
BENCH_LATENCY_SECONDS (60), BENCH_NAIVE_EVENTS (10000), BENCH_RAW_STORE_EVENTS
(= BENCH_EVENTS), BENCH_SEED, BENCH_QUICK=1 (20000 events, 10 s of latency, 2000 naive),
BENCH_INFO_RUN=0 (skip the info-level run), BENCH_INFO_LATENCY=1 (latency at info too),
BENCH_PROFILE=1 (one more drain under py-spy, with the breakdown), BENCH_PROFILE_NATIVE=1,
BENCH_RESULTS (output folder), BENCH_CONSUMER_OVERRIDES (JSON keyword arguments for the
worker's Kafka consumer, e.g. '{"fetch_max_wait_ms": 10}': a what-if run through
bench.patched_worker; the labels say so).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import time
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench import profile as spy
from bench.chart import draw, draw_history
from bench.naive import run_naive, settings_for
from bench.raw import decoded_batches, kafka_passthrough, store_batched
from bench.report import percentile, ratio, table
from bench.runner import (
    Outcomes,
    Topics,
    WorkerProcess,
    committed_total,
    identity_of,
    stage_histograms,
    stage_summary,
)
from bench.runner import read_outcomes as read_topic
from bench.services import (
    RESULTS,
    Services,
    code_version,
    cpu_snapshot,
    cpu_usage,
    create_database,
    create_topics,
    delete_topics,
    discover,
    drop_databases,
    env_flag,
    env_float,
    env_int,
    machine,
    service_pids,
    system_seconds,
    unique,
    vm_kib,
    with_database,
    write_results,
)
from bench.stream import Generator, Record, StreamShape, kind_counts, produce

SAMPLE_SECONDS = 0.5


@dataclass
class Config:
    events: int = 200_000
    tags: int = 50_000
    rate: float = 2_000.0
    latency_seconds: float = 60.0
    naive_events: int = 10_000
    raw_store_events: int = 200_000
    partitions: int = 6
    #: the input topic's partitions where it differs from the other topics' (0: the same)
    input_partitions: int = 0
    seed: int = 20_261_128
    info_run: bool = True
    info_latency: bool = False
    profile: bool = False
    native_profile: bool = False
    chart: bool = True
    results_dir: Path = RESULTS
    quick: bool = False
    consumer_overrides: dict[str, Any] = field(default_factory=dict)
    #: extra worker settings for every worker run (BENCH_WORKER_ENV, JSON), e.g.
    #: '{"OCITAG_EVENT_LOOP": "asyncio"}': one change measured on its own
    worker_env: dict[str, str] = field(default_factory=dict)
    #: PostgreSQL settings of the benchmark's databases (BENCH_DATABASE_SETTINGS, JSON),
    #: e.g. '{"synchronous_commit": "off"}': a what-if, never the product's setting
    database_settings: dict[str, str] = field(default_factory=dict)
    #: the history sizes (``make bench`` runs bench.history, which runs this module
    #: first unless ``history_only``)
    history: bool = True
    history_only: bool = False
    #: worker processes of one group draining the history backlogs (BENCH_REPLICAS):
    #: how throughput grows with replicas, up to the partition count
    replicas: int = 1

    @property
    def input_topic_partitions(self) -> int:
        return self.input_partitions or self.partitions

    @classmethod
    def from_env(cls) -> Config:
        quick = env_flag("BENCH_QUICK")
        events = env_int("BENCH_EVENTS", 20_000 if quick else 200_000)
        return cls(
            events=events,
            tags=env_int("BENCH_TAGS", 5_000 if quick else 50_000),
            rate=env_float("BENCH_RATE", 2_000.0),
            latency_seconds=env_float("BENCH_LATENCY_SECONDS", 10.0 if quick else 60.0),
            naive_events=min(events, env_int("BENCH_NAIVE_EVENTS", 2_000 if quick else 10_000)),
            raw_store_events=min(events, env_int("BENCH_RAW_STORE_EVENTS", events)),
            seed=env_int("BENCH_SEED", 20_261_128),
            info_run=os.environ.get("BENCH_INFO_RUN", "1") != "0",
            info_latency=env_flag("BENCH_INFO_LATENCY"),
            profile=env_flag("BENCH_PROFILE"),
            native_profile=env_flag("BENCH_PROFILE_NATIVE"),
            results_dir=Path(os.environ.get("BENCH_RESULTS", str(RESULTS))),
            quick=quick,
            consumer_overrides=json.loads(os.environ.get("BENCH_CONSUMER_OVERRIDES") or "{}"),
            worker_env=json.loads(os.environ.get("BENCH_WORKER_ENV") or "{}"),
            database_settings=json.loads(os.environ.get("BENCH_DATABASE_SETTINGS") or "{}"),
            history=os.environ.get("BENCH_HISTORY", "1") != "0",
            history_only=env_flag("BENCH_HISTORY_ONLY"),
            replicas=max(1, env_int("BENCH_REPLICAS", 1)),
        )


@dataclass
class Context:
    """One benchmark run's services, names, stream and clean-up lists."""

    config: Config
    services: Services
    prefix: str
    records: list[Record] = field(default_factory=list)
    placed: list[tuple[int, int]] = field(default_factory=list)
    generator: Generator | None = None
    topics: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    log_dir: Path = field(default_factory=lambda: RESULTS / "logs")

    @property
    def input_topic(self) -> str:
        return f"{self.prefix}.events"

    def topics_for(self, label: str) -> Topics:
        return Topics(
            self.input_topic, f"{self.prefix}.{label}.outcomes", f"{self.prefix}.{label}.dlq"
        )

    async def new_topics(self, label: str) -> Topics:
        topics = self.topics_for(label)
        names = [topics.outcomes, topics.dlq]
        await create_topics(self.services.kafka, names, self.config.partitions)
        self.topics.extend(names)
        return topics

    async def new_database(self, label: str) -> str:
        name = f"{self.prefix}_{label}".replace(".", "_")
        self.databases.append(name)
        url = await create_database(self.services.database_url, name)
        if self.config.database_settings:  # a what-if (BENCH_DATABASE_SETTINGS)
            conn = await asyncpg.connect(url)
            try:
                for setting, value in self.config.database_settings.items():
                    await conn.execute(f'ALTER DATABASE "{name}" SET {setting} = {value}')
            finally:
                await conn.close()
        return url

    @property
    def ends(self) -> dict[int, int]:
        ends: dict[int, int] = defaultdict(int)
        for partition, offset in self.placed:
            ends[partition] = max(ends[partition], offset + 1)
        return dict(ends)


# ---- the stream


async def load_stream(ctx: Context, shape: StreamShape | None = None) -> dict[str, Any]:
    """Generate the backlog (the default realistic shape unless one is given) and
    produce it to a fresh input topic."""
    config = ctx.config
    shape = shape or StreamShape(tags=config.tags)
    ctx.generator = Generator(shape, config.seed, ctx.prefix)
    started = time.perf_counter()
    # a backlog of the last hours, one event every few milliseconds
    step = timedelta(milliseconds=5)
    start = datetime.now(UTC) - step * config.events - timedelta(minutes=1)
    ctx.records = ctx.generator.many(config.events, start, step)
    generated = time.perf_counter() - started
    await create_topics(ctx.services.kafka, [ctx.input_topic], config.partitions)
    ctx.topics.append(ctx.input_topic)
    started = time.perf_counter()
    ctx.placed = await produce(ctx.services.kafka, ctx.input_topic, ctx.records)
    produced = time.perf_counter() - started
    return {
        "events": len(ctx.records),
        "tags": config.tags,
        "partitions": config.partitions,
        "shape": asdict(shape),
        "kinds": kind_counts(ctx.records),
        "duplicates": sum(r.duplicate for r in ctx.records),
        "distinct_tags_used": len({r.key for r in ctx.records}),
        # keys hash to partitions; hot tags make some partitions longer than others
        "events_per_partition": {str(p): n for p, n in sorted(ctx.ends.items())},
        "bytes": sum(len(r.value) for r in ctx.records),
        "generate_seconds": round(generated, 2),
        "produce_seconds": round(produced, 2),
        "produce_events_per_second": round(len(ctx.records) / produced, 1),
    }


# ---- throughput


async def drain(
    worker: WorkerProcess,
    ctx: Context,
    profile_to: Path | None = None,
    replicas: Sequence[WorkerProcess] = (),
) -> dict[str, Any]:
    """Time the worker (and its ``replicas``, members of the same group) through the
    whole backlog; sample committed offsets and RSS."""
    total = sum(ctx.ends.values())
    timeout = max(300.0, total / 100)
    workers = [worker, *replicas]
    first_fetch = min(await asyncio.gather(*(w.wait_first_fetch(within=120) for w in workers)))
    wal_before = await wal_position(ctx.services.database_url)
    processes = {"worker": worker.pid, "bench": os.getpid()}
    processes.update({f"replica{i}": w.pid for i, w in enumerate(replicas, 2)})
    trees = service_pids(ctx.services)
    cpu_before = cpu_snapshot(processes, trees)
    recorder = (
        spy.start_recording(worker.pid, profile_to, ctx.config.native_profile)
        if (profile_to)
        else None
    )
    series: list[list[float]] = []
    admin = AIOKafkaAdminClient(bootstrap_servers=ctx.services.kafka)
    await admin.start()
    try:
        tick = time.monotonic()
        deadline = tick + timeout
        while True:
            committed = await committed_total(admin, worker.group, ctx.input_topic)
            series.append(
                [round(time.time() - first_fetch, 3), committed, vm_kib(worker.pid, "VmRSS") or 0]
            )
            if committed >= total:
                break
            for each in workers:
                each.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"not drained in {timeout:.0f} s: {committed}/{total}")
            tick += SAMPLE_SECONDS
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
    finally:
        await admin.close()
    cpu_after = cpu_snapshot(processes, trees)
    spy_output = spy.stop_recording(recorder) if recorder else None
    finals = await asyncio.gather(*(w.final_metrics() for w in workers))
    final = {k: sum(f.get(k, 0.0) for f in finals) for k in finals[0]}
    final["ocitag_last_commit_timestamp_seconds"] = max(
        f.get("ocitag_last_commit_timestamp_seconds", 0.0) for f in finals
    )
    wal_bytes = await wal_position(ctx.services.database_url) - wal_before
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        stages = stage_summary({}, stage_histograms(await worker.metrics_text(session)))
    seconds = final["ocitag_last_commit_timestamp_seconds"] - first_fetch
    cpu = cpu_usage(cpu_before, cpu_after)
    if replicas:  # every replica's CPU counts as the worker's; each is kept too
        cpu["worker_replicas"] = [
            cpu.pop("worker"),
            *(cpu.pop(f"replica{i}") for i in range(2, len(workers) + 1)),
        ]
        cpu["worker"] = round(sum(cpu["worker_replicas"]), 3)
    batches = final.get("ocitag_batch_processing_seconds_count", 0.0)
    result: dict[str, Any] = {
        "events": total,
        "seconds": round(seconds, 3),
        "events_per_second": round(total / seconds, 1),
        "steady_events_per_second": steady_rate(series, total),
        "replicas": len(workers),
        "peak_rss_mib": round(max(vm_kib(w.pid, "VmHWM") or 0 for w in workers) / 1024, 1),
        "cpu_cores": cpu,
        # from the worker's own histograms: how big its batches were, how long each took,
        # and how much of the drain each partition had a batch in flight
        "worker_batches": {
            "count": int(batches),
            "mean_events": round(final.get("ocitag_batch_size_events_sum", 0) / batches, 1)
            if batches
            else None,
            "mean_seconds": round(final.get("ocitag_batch_processing_seconds_sum", 0) / batches, 4)
            if batches
            else None,
            "partition_busy_share": round(
                final.get("ocitag_batch_processing_seconds_sum", 0)
                / (seconds * ctx.config.partitions),
                3,
            ),
            "db_retries": final.get("ocitag_db_retries_total", 0),
            "kafka_retries": final.get("ocitag_kafka_retries_total", 0),
        },
        "stages": stages,
        # PostgreSQL's write-ahead log written while draining (the whole server: the
        # benchmark's databases are the only ones busy on the local stack)
        "wal_bytes_per_event": round(wal_bytes / total, 1),
        "series": series,
    }
    if spy_output is not None:
        result["py_spy"] = spy_output.strip().splitlines()[-1:]
    return result


async def wal_position(server_url: str) -> int:
    conn = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
    finally:
        await conn.close()


def steady_rate(series: Sequence[Sequence[float]], total: int) -> float | None:
    """Events/s between 10 % and 70 % committed: all partitions busy, before the tail of
    the partitions that got more events than the others."""
    points = [(s[0], s[1]) for s in series]
    low = next((p for p in points if p[1] >= 0.1 * total), None)
    high = next((p for p in points if p[1] >= 0.7 * total), None)
    if low is None or high is None or high[0] <= low[0]:
        return None
    return round((high[1] - low[1]) / (high[0] - low[0]), 1)


def check_outcomes(ctx: Context, outcomes: Outcomes) -> dict[str, Any]:
    """Every input has its outcome (as many as there were inputs of each identity), and
    the statuses match the stream's kinds."""
    expected: Counter[str] = Counter(
        r.ident or f"urn:kafka:{ctx.input_topic}:{p}:{o}"
        for r, (p, o) in zip(ctx.records, ctx.placed, strict=True)
    )
    missing = expected - outcomes.identities
    extra = outcomes.identities - expected
    kinds = kind_counts(ctx.records)
    statuses = outcomes.statuses
    kinds_match = (
        statuses[400] == kinds["undecodable"]
        and statuses[422] == kinds["invalid"]
        and statuses[200] + statuses[409] + statuses[412] == kinds["valid"]
    )
    return {
        "total": outcomes.total,
        "by_status": {str(k): v for k, v in sorted(statuses.items())},
        "missing": sum(missing.values()),
        "extra": sum(extra.values()),
        "complete": not missing,
        "statuses_match_stream": kinds_match,
    }


@dataclass(frozen=True)
class WorkerSetup:
    """Where one worker configuration reads and writes (kept for its latency phase)."""

    label: str
    log_level: str
    database_url: str
    topics: Topics
    group: str

    def process(self, ctx: Context, suffix: str = "") -> WorkerProcess:
        return WorkerProcess(
            ctx.services.kafka,
            self.database_url,
            self.topics,
            self.group,
            self.log_level,
            ctx.log_dir / f"{ctx.prefix}-{self.label}{suffix}.log",
            consumer_overrides=ctx.config.consumer_overrides,
            extra_env=ctx.config.worker_env,
        )


def _stopped(worker: WorkerProcess, result: dict[str, Any]) -> None:
    """Stop the worker; keep its log only if it did not exit cleanly."""
    code = worker.stop()
    result["exit_code"] = code
    result["log_bytes"] = worker.log_path.stat().st_size if worker.log_path.exists() else 0
    if code == 0:
        worker.log_path.unlink(missing_ok=True)
    else:
        result["log"] = str(worker.log_path)


async def worker_run(
    ctx: Context, label: str, log_level: str, *, profile: bool = False, replicas: int = 1
) -> tuple[WorkerSetup, dict[str, Any]]:
    """One worker (or ``replicas`` of it, one group) on its own database, group and
    outcome topic, over the whole backlog."""
    setup = WorkerSetup(
        label, log_level, await ctx.new_database(label), await ctx.new_topics(label),
        f"{ctx.prefix}-{label}",
    )  # fmt: skip
    worker = setup.process(ctx)
    others = [setup.process(ctx, f"-replica{i}") for i in range(2, replicas + 1)]
    profile_to = ctx.config.results_dir / "profile-latest.txt" if profile else None
    if profile_to is not None:
        profile_to.parent.mkdir(parents=True, exist_ok=True)
    worker.start()
    for other in others:
        other.start()
    label_text = f"worker, log level {log_level}"
    if others:
        label_text += f", {replicas} replicas"
    if ctx.config.consumer_overrides:
        label_text += f", consumer {json.dumps(ctx.config.consumer_overrides)}"
    result: dict[str, Any] = {"label": label_text, "log_level": log_level}
    try:
        result.update(await drain(worker, ctx, profile_to, others))
    finally:
        for other in others:
            other.stop()
        _stopped(worker, result)
    result["outcomes"] = check_outcomes(
        ctx, await read_topic(ctx.services.kafka, setup.topics.outcomes, ctx.config.partitions)
    )
    if profile_to is not None:
        with profile_to.open() as lines:
            stacks = spy.parse(lines)
        result["profile"] = spy.breakdown(stacks, result["events"])
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (profile_to.parent / f"profile-{stamp}.txt").write_text(profile_to.read_text())
    return setup, result


async def latency_run(
    ctx: Context, setup: WorkerSetup, profile_to: Path | None = None
) -> dict[str, Any]:
    """The worker of ``setup`` again, caught up (its group committed the backlog and its
    database holds the tags): events at a fixed rate, creation → outcome. With
    ``profile_to``, py-spy samples the worker while the rate runs (``result["py_spy"]``:
    its last line; the caller reads the stacks)."""
    assert ctx.generator is not None
    worker = setup.process(ctx, "-latency")
    worker.start()
    result: dict[str, Any] = {"log_level": setup.log_level}
    try:
        await worker.wait_assigned(ctx.config.input_topic_partitions, within=120)
        await asyncio.sleep(1.0)  # let the first (empty) fetches settle
        processes = {"worker": worker.pid, "bench": os.getpid()}
        trees = service_pids(ctx.services)
        cpu_before = cpu_snapshot(processes, trees)
        stages = StageRecorder(worker)
        await stages.start()
        recorder = (
            spy.start_recording(worker.pid, profile_to, ctx.config.native_profile)
            if profile_to is not None
            else None
        )
        try:
            result.update(
                await measure_latency(
                    ctx.services.kafka,
                    topics=setup.topics,
                    generator=ctx.generator,
                    rate=ctx.config.rate,
                    seconds=ctx.config.latency_seconds,
                    partitions=ctx.config.partitions,
                )
            )
        finally:
            if recorder is not None:
                result["py_spy"] = spy.stop_recording(recorder).strip().splitlines()[-1:]
            result["stages"], result["stage_timeline"] = await stages.stop()
        result["cpu_cores"] = cpu_usage(cpu_before, cpu_snapshot(processes, trees))
        result["peak_rss_mib"] = round((vm_kib(worker.pid, "VmHWM") or 0) / 1024, 1)
    finally:
        _stopped(worker, result)
    return result


class StageRecorder:
    """Reads the worker's per-stage batch histograms every second while latency is
    measured: the stages' totals, and per second each stage's slowest bucket (the tail's
    cause shows as the stage whose time jumps when the latency does)."""

    def __init__(self, worker: WorkerProcess, every: float = 1.0) -> None:
        self._worker = worker
        self._every = every
        # (when, the stage histograms, the machine's busy, stolen and iowait CPU seconds
        # so far)
        self._readings: list[
            tuple[float, dict[str, dict[str, Any]], tuple[float, float, float]]
        ] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def _read(self, session: aiohttp.ClientSession) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            text = await self._worker.metrics_text(session)
            self._readings.append((time.perf_counter(), stage_histograms(text), system_seconds()))

    async def start(self) -> None:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        await self._read(session)

        async def loop() -> None:
            try:
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self._every)
                    await self._read(session)
            finally:
                await session.close()

        self._task = asyncio.create_task(loop())

    async def stop(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        self._stop.set()
        if self._task is not None:
            await self._task
        if len(self._readings) < 2:
            return {}, []
        first_at = self._readings[0][0]
        # per second, beside the stages: how busy the machine was, how much of its CPU the
        # hypervisor gave to someone else (a slow second with steal is the host's), and
        # how long idle CPUs waited for the disk (a slow second with iowait is an fsync's)
        timeline = [
            {"second": round(t1 - first_at, 1), **{
                stage: {k: v[k] for k in ("batches", "mean_ms", "max_le_ms")}
                for stage, v in stage_summary(r0, r1).items()
            }, "machine_cores": round((c1[0] - c0[0]) / (t1 - t0), 2),
               "steal_cores": round((c1[1] - c0[1]) / (t1 - t0), 2),
               "iowait_cores": round((c1[2] - c0[2]) / (t1 - t0), 2)}
            for (t0, r0, c0), (t1, r1, c1) in itertools.pairwise(self._readings)
        ]  # fmt: skip
        return stage_summary(self._readings[0][1], self._readings[-1][1]), timeline


# ---- latency


async def measure_latency(
    kafka: str,
    *,
    topics: Topics,
    generator: Generator,
    rate: float,
    seconds: float,
    partitions: int,
) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``seconds``; creation → outcome received."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=None, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topics.outcomes, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    received: list[tuple[float, bytes]] = []
    stopping = asyncio.Event()
    total = max(1, int(rate * seconds))
    all_received = asyncio.Event()

    async def receive() -> None:
        while not stopping.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            received.extend((now, r.value) for records in batch.values() for r in records)
            if len(received) >= total:
                all_received.set()

    receiver = asyncio.create_task(receive())
    # The benchmark holds the whole stream it drained (a million records at the largest
    # history): a full collection of this process then stops its event loop for a
    # second or more, and every send and receipt of that second is timed late. Found
    # as seconds in which the load generator sent a few hundred events and then a
    # burst; out of the timed window, the collector measures nothing of the worker.
    gc.collect()
    gc.freeze()
    gc.disable()
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka, acks="all", enable_idempotence=True, linger_ms=1
    )
    await producer.start()
    sends: list[tuple[float, Record, asyncio.Future[Any]]] = []
    try:
        started = time.perf_counter()
        while len(sends) < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while len(sends) < due:
                record = generator.next(datetime.now(UTC))
                sent_at = time.perf_counter()
                future = await producer.send(
                    topics.input, record.value, key=record.key, headers=record.headers
                )
                sends.append((sent_at, record, future))
            await asyncio.sleep(0.002)
        offered_seconds = time.perf_counter() - started
        # the outcomes first: gathering ~100,000 send futures takes the event loop for
        # most of a second, and outcomes read meanwhile would be timed late (this was the
        # "end of stream" tail: the last second's events measured at 1-2 s while the
        # worker's stage times said they were done in a tenth of that)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_received.wait(), timeout=60)
        metas = await asyncio.gather(*(f for _, _, f in sends))
    finally:
        stopping.set()
        await receiver
        await producer.stop()
        await consumer.stop()
        gc.enable()
        gc.unfreeze()
    latencies, timeline, unmatched = match_latencies(
        [(sent_at, record) for sent_at, record, _ in sends],
        [(m.partition, m.offset) for m in metas],
        received,
        topics.input,
        started,
    )
    steps = [q / 2 for q in range(1, 200)] + [99.9, 100.0]
    return {
        "offered_rate": rate,
        "seconds": seconds,
        "sent": len(sends),
        "achieved_rate": round(len(sends) / offered_seconds, 1),
        "received": len(received),
        "matched": len(latencies),
        "unmatched": unmatched,
        "complete": len(latencies) == len(sends),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "mean_ms": round(sum(latencies) / len(latencies), 1) if latencies else None,
        "cdf_ms": [[q, round(percentile(latencies, q), 2)] for q in steps] if latencies else [],
        "timeline": timeline,
    }


def match_latencies(
    sends: Sequence[tuple[float, Record]],
    placed: Sequence[tuple[int, int]],
    received: Sequence[tuple[float, bytes]],
    input_topic: str,
    started: float,
) -> tuple[list[float], list[list[float]], int]:
    """Each outcome paired with the earliest unanswered send of its input: sorted
    latencies (ms), a per-second timeline (by send time: count, p50, p99, max), and how
    many outcomes answered nothing that was sent."""
    pending: dict[str, deque[float]] = defaultdict(deque)
    for (sent_at, record), (partition, offset) in zip(sends, placed, strict=True):
        identity = record.ident or f"urn:kafka:{input_topic}:{partition}:{offset}"
        pending[identity].append(sent_at)
    latencies: list[float] = []
    per_second: dict[int, list[float]] = defaultdict(list)
    unmatched = 0
    for received_at, value in received:
        queue = pending.get(identity_of(json.loads(value)))
        if queue:
            sent_at = queue.popleft()
            latencies.append((received_at - sent_at) * 1000)
            per_second[int(sent_at - started)].append(latencies[-1])
        else:
            unmatched += 1
    latencies.sort()
    timeline: list[list[float]] = []
    for second, values in sorted(per_second.items()):
        values.sort()
        timeline.append(
            [second, len(values), round(percentile(values, 50), 1),
             round(percentile(values, 99), 1), round(values[-1], 1)]
        )  # fmt: skip
    return latencies, timeline, unmatched


# ---- baseline and raw limits


async def naive_run(ctx: Context) -> dict[str, Any]:
    topics = await ctx.new_topics("naive")
    database_url = await ctx.new_database("naive")
    settings = settings_for(ctx.services.kafka, database_url, topics, f"{ctx.prefix}-naive")
    result = await run_naive(settings, ctx.config.naive_events)
    result["label"] = "naive baseline (one event at a time)"
    return result


async def raw_runs(ctx: Context) -> dict[str, dict[str, Any]]:
    topics = await ctx.new_topics("rawkafka")
    settings = settings_for(
        ctx.services.kafka, ctx.services.database_url, topics, f"{ctx.prefix}-rawkafka"
    )
    kafka = await kafka_passthrough(settings, len(ctx.records))
    kafka["label"] = "raw (a): Kafka only, consume → republish → commit"
    count = ctx.config.raw_store_events
    batches = decoded_batches(ctx.records[:count], ctx.placed[:count], ctx.input_topic, 500)
    out = {"raw_kafka": kafka}
    for label, concurrent in (("sequential", False), ("partitioned", True)):
        database_url = await ctx.new_database(f"raw{label}")
        settings = settings_for(ctx.services.kafka, database_url, topics, "unused")
        result = await store_batched(settings, batches, count, concurrent)
        result["label"] = "raw (b): PostgreSQL only, Store.apply x 500, " + (
            "one batch at a time" if not concurrent else "a batch per partition at once"
        )
        out[f"raw_store_{label}"] = result
    return out


# ---- the whole run


async def run(config: Config, services: Services) -> dict[str, Any]:
    ctx = Context(config, services, unique("bench"), log_dir=config.results_dir / "logs")
    results: dict[str, Any] = {
        "benchmark": "pipeline",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "machine": machine(),
        "code": code_version(),
        "services": {"origin": services.origin, "kafka": services.kafka},
        "runs": {},
    }
    runs: dict[str, Any] = results["runs"]
    if config.history_only:  # bench.history adds its part
        results["summary"] = summarise(results)
        return results
    try:
        say(f"producing {config.events:,} events over {config.tags:,} tags")
        results["stream"] = await load_stream(ctx)
        say(f"produced in {results['stream']['produce_seconds']} s; worker, log level warning")
        # every drain first: the latency phases add events to the input topic
        warning, runs["worker_warning"] = await worker_run(ctx, "warning", "warning")
        say(f"worker: {runs['worker_warning']['events_per_second']:,.0f} events/s")
        info = None
        if config.info_run:
            say("worker, log level info")
            info, runs["worker_info"] = await worker_run(ctx, "info", "info")
            say(f"worker: {runs['worker_info']['events_per_second']:,.0f} events/s")
        if config.profile:
            say("worker under py-spy")
            _, profiled = await worker_run(ctx, "profiled", "warning", profile=True)
            profiled["label"] += ", under py-spy"
            results["profile"] = profiled.pop("profile")
            runs["worker_profiled"] = profiled
        say(f"naive baseline on {config.naive_events:,} events")
        runs["naive"] = await naive_run(ctx)
        say("raw limits")
        runs.update(await raw_runs(ctx))
        say(f"latency: {config.rate:,.0f} events/s for {config.latency_seconds:g} s")
        results["latency"] = await latency_run(ctx, warning)
        if info is not None and config.info_latency:
            say("latency at log level info")
            results["latency_info"] = await latency_run(ctx, info)
    finally:
        await clean_up(ctx)
    results["summary"] = summarise(results)
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


async def clean_up(ctx: Context) -> None:
    """Drop this run's databases and topics; a failure here (a service restarted under
    us) is reported with the names to drop by hand, not raised over the real error."""
    for what, names, action in (
        ("databases", ctx.databases, drop_databases(ctx.services.database_url, ctx.databases)),
        ("topics", ctx.topics, delete_topics(ctx.services.kafka, ctx.topics)),
    ):
        try:
            await action
        except Exception as exc:
            say(f"could not remove {what} {names}: {type(exc).__name__}: {exc}")


def say(text: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    runs = results["runs"]
    eps = {name: run["events_per_second"] for name, run in runs.items()}
    naive = eps.get("naive")
    store_limit = max(
        (eps[k] for k in ("raw_store_sequential", "raw_store_partitioned") if k in eps),
        default=None,
    )
    limits = {k: v for k, v in (("kafka", eps.get("raw_kafka")), ("store", store_limit)) if v}
    lower = min(limits.values()) if limits else None
    lower_name = min(limits, key=lambda k: limits[k]) if limits else None
    rows = []
    for name, run in runs.items():
        lat = results.get("latency") if name == "worker_warning" else None
        if name == "worker_info":
            lat = results.get("latency_info")
        rows.append(
            {
                "run": name,
                "label": run["label"],
                "events": run["events"],
                "seconds": run["seconds"],
                "events_per_second": run["events_per_second"],
                "x_naive": ratio(run["events_per_second"], naive),
                "x_lower_raw_limit": ratio(run["events_per_second"], lower),
                "p50_ms": lat and lat["p50_ms"],
                "p95_ms": lat and lat["p95_ms"],
                "p99_ms": lat and lat["p99_ms"],
                "max_ms": lat and lat["max_ms"],
                "peak_rss_mib": run.get("peak_rss_mib"),
            }
        )
    reference = {}
    if lower is not None and lower_name is not None:
        reference[f"lower raw limit ({lower_name})"] = lower
    if naive:
        reference["naive"] = naive
    return {
        "lower_raw_limit": {"name": lower_name, "events_per_second": lower},
        "table": rows,
        "reference_lines": reference,
    }


def render(results: dict[str, Any]) -> str:
    rows = [
        [
            r["label"],
            r["events"],
            r["seconds"],
            r["events_per_second"],
            r["x_naive"],
            r["x_lower_raw_limit"],
            r["p50_ms"],
            r["p95_ms"],
            r["p99_ms"],
            r["max_ms"],
            r["peak_rss_mib"],
        ]
        for r in results["summary"]["table"]
    ]
    headers = [
        "run", "events", "s", "events/s", "x naive", "x lower raw limit",
        "p50 ms", "p95 ms", "p99 ms", "max ms", "peak RSS MiB",
    ]  # fmt: skip
    lines = [table(headers, rows), ""] if rows else []
    lower = results["summary"]["lower_raw_limit"]
    if lower["name"]:
        lines.append(
            f"lower raw limit: {lower['name']} at {lower['events_per_second']:,} events/s "
            "(store = the better of its two shapes)"
        )
    for name, run in results["runs"].items():
        if "outcomes" in run:
            o = run["outcomes"]
            lines.append(
                f"{name}: outcomes {o['total']:,} {o['by_status']}, complete={o['complete']} "
                f"(missing {o['missing']}, extra {o['extra']}), statuses match the stream="
                f"{o['statuses_match_stream']}, exit code {run.get('exit_code')}"
            )
        if "worker_batches" in run:
            b = run["worker_batches"]
            lines.append(
                f"{name}: {b['count']:,} batches of {b['mean_events']} events on average, "
                f"{b['mean_seconds']} s each; a partition had a batch in flight "
                f"{b['partition_busy_share']:.0%} of the time; steady rate (10-70 % committed) "
                f"{run.get('steady_events_per_second')} events/s"
            )
        if "cpu_cores" in run:
            c = run["cpu_cores"]
            lines.append(
                f"{name}: CPU in cores while draining — worker {c.get('worker')}, kafka "
                f"{c.get('kafka')}, postgres {c.get('postgres')}, bench {c.get('bench')}, "
                f"other {c.get('other')} (machine {c.get('machine_total')} of {c.get('cpus')})"
            )
    for key in ("latency", "latency_info"):
        lat = results.get(key)
        if lat:
            lines.append(
                f"{key}: offered {lat['offered_rate']:,.0f}/s (achieved {lat['achieved_rate']:,}/s)"
                f" for {lat['seconds']:g} s at log level {lat.get('log_level')}: sent "
                f"{lat['sent']:,}, matched {lat['matched']:,}, unmatched {lat['unmatched']}, "
                f"complete={lat['complete']}, mean {lat['mean_ms']} ms"
            )
    code = results.get("code", {})
    lines.append(
        f"worker code: {code.get('commit')} {code.get('subject')!r}"
        + (" (worker/ modified)" if code.get("worker_modified") else "")
    )
    stream = results.get("stream")
    if stream:
        lines.append(
            f"stream: {stream['events']:,} events, kinds {stream['kinds']}, duplicates "
            f"{stream['duplicates']:,}, tags used {stream['distinct_tags_used']:,}, produced "
            f"at {stream['produce_events_per_second']:,.0f}/s; events per partition "
            f"{stream.get('events_per_partition')}"
        )
    if "profile" in results:
        lines += ["", "profile of the worker while draining (py-spy, on-CPU samples):"]
        lines.append(spy.render(results["profile"]))
    return "\n".join(lines)


def title(results: dict[str, Any]) -> str:
    runs = results["runs"]
    parts = [
        f"{run['label']}: {run['events_per_second']:,.0f}/s"
        for name, run in runs.items()
        if name in {"worker_warning", "worker_info", "naive"}
    ]
    return f"ocitag-worker, {results['started_at']} — " + "; ".join(parts)


def save(results: dict[str, Any], directory: Path, chart: bool = True) -> Path:
    results["title"] = title(results)
    path = write_results("pipeline", results, directory)
    if chart and results["runs"]:
        png = path.with_suffix(".png")
        draw(results, png)
        (directory / "latest.png").write_bytes(png.read_bytes())
    if chart and results.get("history"):
        png = path.with_name(path.stem + "-history.png")
        draw_history(results["history"], png)
        (directory / "history-latest.png").write_bytes(png.read_bytes())
    return path


def main(argv: Sequence[str] | None = None) -> None:
    del argv
    config = Config.from_env()
    services = discover()
    results = asyncio.run(run(config, services))
    path = save(results, config.results_dir, config.chart)
    print()
    print(render(results))
    print(f"\nresults: {path} (and latest.json, latest.png in {config.results_dir})")


if __name__ == "__main__":
    main()
