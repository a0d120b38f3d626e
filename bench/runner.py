"""The real worker as a subprocess (``python -m worker run``), its /metrics, and the
Kafka-side readings the benchmarks time it by: committed offsets and outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.services import REPO, free_port


@dataclass(frozen=True)
class Topics:
    input: str
    outcomes: str
    dlq: str

    @property
    def state(self) -> str:
        """The state topic beside the outcome topic, one per run as the outcomes (the
        worker creates it; a run with ``OCITAG_STATE_TOPIC`` empty in ``extra_env`` has
        none)."""
        return f"{self.outcomes.removesuffix('.outcomes')}.state"


@dataclass
class WorkerProcess:
    """One ``python -m worker run`` with default settings except where it reads and
    writes, its HTTP port and the log level."""

    kafka: str
    database_url: str
    topics: Topics
    group: str
    log_level: str
    log_path: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: keyword arguments for the worker's Kafka consumer (a what-if experiment, run
    #: through bench.patched_worker); empty: the plain ``python -m worker run``
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    #: the checkout whose ``worker`` package runs (``python -m`` imports from its working
    #: directory first); None: this one
    checkout: Path | None = None

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OCITAG_", "KAFKA_", "DATABASE_"))
        }
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.kafka,
            DATABASE_URL=self.database_url,
            OCITAG_INPUT_TOPIC=self.topics.input,
            OCITAG_OUTCOME_TOPIC=self.topics.outcomes,
            OCITAG_DLQ_TOPIC=self.topics.dlq,
            OCITAG_STATE_TOPIC=self.topics.state,
            OCITAG_GROUP_ID=self.group,
            OCITAG_HTTP_HOST="127.0.0.1",
            OCITAG_HTTP_PORT=str(self.port),
            OCITAG_LOG_LEVEL=self.log_level,
        )
        env.update(self.extra_env)
        if self.consumer_overrides:
            env["BENCH_CONSUMER_OVERRIDES"] = json.dumps(dict(self.consumer_overrides))
        return env

    def command(self) -> list[str]:
        if (
            self.consumer_overrides
            or self.extra_env.get("BENCH_HISTORY_OFF") == "1"
            or self.extra_env.get("BENCH_CALLS_TO")
        ):
            return [sys.executable, "-m", "bench.patched_worker"]
        return [sys.executable, "-m", "worker", "run"]

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.checkout or REPO,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the worker exited ({self.proc and self.proc.returncode}):\n{tail}")

    async def metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """Unlabelled samples of /metrics (labelled ones summed by name)."""
        async with session.get(f"http://127.0.0.1:{self.port}/metrics") as response:
            text = await response.text()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            with contextlib.suppress(ValueError):
                values[name] = values.get(name, 0.0) + float(value)
        return values

    async def metrics_text(self, session: aiohttp.ClientSession) -> str:
        async with session.get(f"http://127.0.0.1:{self.port}/metrics") as response:
            return await response.text()

    async def wait_first_fetch(self, within: float) -> float:
        """Wall-clock time at which /metrics first shows a consumed record."""
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    found = await self.metrics(session)
                except (aiohttp.ClientError, TimeoutError):
                    found = {}
                if found.get("ocitag_events_consumed_total", 0) > 0:
                    return time.time()
                await asyncio.sleep(0.02)
        raise TimeoutError(f"the worker consumed nothing within {within} s")

    async def wait_assigned(self, partitions: int, within: float) -> None:
        """Until /metrics shows every input partition assigned to this worker."""
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    found = await self.metrics(session)
                except (aiohttp.ClientError, TimeoutError):
                    found = {}
                if found.get("ocitag_assigned_partitions", 0) >= partitions:
                    return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"the worker was not assigned {partitions} partitions in {within} s")

    async def final_metrics(self) -> dict[str, float]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            return await self.metrics(session)

    def stop(self, timeout: float = 40) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


STAGES = ("fetch", "decode", "apply", "produce", "commit")
#: garbage-collector pauses by generation (``ocitag_gc_pause_seconds``), read like stages
GC_GENERATIONS = ("gc0", "gc1", "gc2")
_SERIES = {"ocitag_batch_stage_seconds": "stage", "ocitag_gc_pause_seconds": "generation"}


def stage_histograms(text: str) -> dict[str, dict[str, Any]]:
    """The worker's per-stage batch histograms and its collector pauses from a /metrics
    text: per stage (and ``gc<generation>``) the cumulative bucket counts (by upper
    bound), count and sum."""
    found: dict[str, dict[str, Any]] = {
        s: {"buckets": {}, "count": 0.0, "sum": 0.0} for s in STAGES + GC_GENERATIONS
    }
    for line in text.splitlines():
        if not line.startswith(("ocitag_batch_stage_seconds", "ocitag_gc_pause_seconds")):
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        base = name.rsplit("_", 1)[0]
        label = _SERIES.get(base)
        if label is None:
            continue
        pairs = dict(p.split("=", 1) for p in labels.rstrip("}").split(",") if "=" in p)
        stage = pairs.get(label, "").strip('"')
        if label == "generation":
            stage = "gc" + stage
        if stage not in found:
            continue
        if name.endswith("_bucket"):
            found[stage]["buckets"][pairs["le"].strip('"')] = float(value)
        elif name.endswith("_count"):
            found[stage]["count"] = float(value)
        elif name.endswith("_sum"):
            found[stage]["sum"] = float(value)
    return found


def stage_summary(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per stage between two readings: batches, mean ms, and the bucket bounds (ms) that
    hold the p50, p99 and the slowest batch (histogram resolution)."""
    out: dict[str, dict[str, Any]] = {}
    for stage in STAGES + GC_GENERATIONS:
        a, b = after[stage], before.get(stage, {"buckets": {}, "count": 0.0, "sum": 0.0})
        count = a["count"] - b["count"]
        bounds = sorted(
            ((float("inf") if le == "+Inf" else float(le)), n - b["buckets"].get(le, 0.0))
            for le, n in a["buckets"].items()
        )

        def bound(
            q: float, bounds: list[tuple[float, float]] = bounds, count: float = count
        ) -> Any:
            for upper, n in bounds:
                if n >= q * count:
                    return None if upper == float("inf") else round(upper * 1000, 1)
            return None

        out[stage] = {
            "batches": int(count),
            "mean_ms": round((a["sum"] - b["sum"]) / count * 1000, 2) if count else None,
            "p50_le_ms": bound(0.5) if count else None,
            "p99_le_ms": bound(0.99) if count else None,
            "max_le_ms": bound(1.0) if count else None,
        }
    return out


async def committed_total(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


@dataclass
class Outcomes:
    """What the outcome topic holds: statuses, and each outcome's identity (the input
    event id it answers, ``causationid``, or for records with none the record itself,
    ``data.instance``)."""

    statuses: Counter[int] = field(default_factory=Counter)
    identities: Counter[str] = field(default_factory=Counter)
    total: int = 0

    def add(self, value: bytes) -> str:
        body: dict[str, Any] = json.loads(value)
        self.total += 1
        self.statuses[int(body["status"])] += 1
        identity = identity_of(body)
        self.identities[identity] += 1
        return identity


def identity_of(body: Mapping[str, Any]) -> str:
    cause = body.get("causationid")
    if cause is not None:
        return str(cause)
    return str(body["data"]["instance"])


async def read_outcomes(kafka: str, topic: str, partitions: int) -> Outcomes:
    """Every outcome on the topic now (up to the end offsets read at the start)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=32 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    found = Outcomes()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1_000, max_records=10_000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp] and record.value is not None:
                        found.add(record.value)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return found
