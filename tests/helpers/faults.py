"""The fault-injection harness: real worker processes, the real broker and database of
the local stack, a stream of events produced at a steady rate, faults injected while it
flows, and a check of everything afterwards against the reference model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from tests.helpers.model import Model, Summary
from tests.helpers.services import REPO, STACK
from tests.helpers.store import summary
from tests.helpers.wait import eventually
from worker.decode import decode
from worker.events import Invalid, RawRecord, TagDeleted, TagMoved, Undecodable
from worker.outcomes import outcome_id, record_outcome_id
from worker.problems import ProblemKind

PARTITIONS = 6
SOURCE = "https://registry.example.com/webhook"
RATE = float(os.environ.get("OCITAG_FAULT_RATE", "2500"))  # records/s the streams go at
REPORT = REPO / ".cache" / "faults-report.json"


def record(name: str, seed: int, report: dict[str, object]) -> None:
    """A scenario's numbers, into .cache/faults-report.json and the test output."""
    REPORT.parent.mkdir(exist_ok=True)
    found = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    found[f"{name}[{seed}]"] = report
    REPORT.write_text(json.dumps(found, indent=2, sort_keys=True))
    print(f"\n{name}[seed {seed}]: {json.dumps(report, sort_keys=True)}")


def stack(command: str) -> None:
    subprocess.run([str(STACK), command], check=True, capture_output=True, timeout=180)


@contextlib.contextmanager
def broker_frozen() -> Iterator[None]:
    """The local stack's broker frozen (SIGSTOP) until the block ends: its port still
    takes connections and requests, and nothing answers them, as a broker cut off by
    the network (a stopped one refuses at once)."""
    cache = Path(os.environ.get("OCITAG_STACK_DIR", str(REPO / ".cache" / "stack")))
    pid = int((cache / "kafka" / "kafka.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def _created(admin: AIOKafkaAdminClient, topics: list[NewTopic], within: float = 60) -> None:
    """Create ``topics`` and return once the broker lists them all. aiokafka's
    ``create_topics`` reports a topic's failure in its answer rather than raising it: a
    broker just thawed by a test before (``broker_frozen``) may still be fenced by its
    controller and refuse, and the workers (which do not create topics here) would then
    stop on a missing topic."""
    wanted = {t.name for t in topics}
    async with asyncio.timeout(within):
        while True:
            try:
                if not (missing := wanted - set(await admin.list_topics())):
                    return
                await admin.create_topics([t for t in topics if t.name in missing])
            # the thawed broker's requests time out, or its metadata names no controller
            # yet (aiokafka then fails on ``controller.nodeId``: AttributeError)
            except (KafkaError, AttributeError):
                pass
            await asyncio.sleep(0.2)


@dataclass
class Stream:
    """Records to publish, made from a seed: skewed tag popularity, duplicates,
    out-of-order times, deletions (5 %: of live tags, of deleted or never-seen ones, and
    late ones), invalid data and undecodable records."""

    records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]

    @classmethod
    def make(cls, seed: int, events: int, tags: int) -> Stream:
        rng = random.Random(seed)
        base = datetime(2026, 11, 1, tzinfo=UTC)
        weights = [1 / (n + 1) ** 0.8 for n in range(tags)]
        records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
        clock = 0.0
        for n in range(events):
            roll = rng.random()
            if records and roll < 0.03:  # a duplicate delivery of an earlier record
                records.append(rng.choice(records[-500:]))
                continue
            tag = rng.choices(range(tags), weights)[0]
            clock += rng.uniform(0, 0.01)
            when = clock - rng.uniform(0, 5) if rng.random() < 0.05 else clock  # out of order
            data: dict[str, Any] = {
                "repository": f"registry.example.com/fault/app{tag % 97}",
                "tag": f"v{tag}",
                "artifact": f"{rng.randrange(16**8):08x}" * 8,
                "actor": rng.choice(["alice", "bob", "ci"]),
            }
            if roll > 0.99:
                data["artifact"] = "not-a-digest"  # 422
            deletion = 0.93 < roll <= 0.98
            if deletion:  # the tag was deleted: 200 removed, 404 or 409
                del data["artifact"]
            body = {
                "specversion": "1.0",
                "id": f"evt-{seed}-{n}",
                "source": SOURCE,
                "type": "ocitag.deleted.v1" if deletion else "ocitag.moved.v1",
                "time": (base + timedelta(seconds=when)).isoformat().replace("+00:00", "Z"),
                "data": data,
            }
            key = f"{data['repository']}:{data['tag']}".encode()
            value = json.dumps(body).encode()
            if 0.985 < roll <= 0.99:
                value = b"\x01not json " + value[:40]  # 400, dead-lettered
            records.append((key, value, [("content-type", b"application/cloudevents+json")]))
        return cls(records)


@dataclass
class Published:
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def events(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines."""
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    async def running(self, timeout: float = 120.0) -> None:
        """Until the worker logged ``running`` (its signal handlers are installed and it
        consumes). A SIGTERM before that meets the interpreter's default action while it
        is still importing (exit -15), which on a loaded machine can take seconds."""
        await eventually(
            lambda: any(line.get("event") == "running" for line in self.events()), timeout
        )


@dataclass
class Scenario:
    """One scenario's topics, database, workers and bookkeeping."""

    name: str
    kafka: str
    database_url: str
    tmp: Path
    events: int
    tags: int
    seed: int
    replication: int = 1  # 3 on the replicated stack, with min.insync.replicas=2
    prefix: str = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    published: list[Published] = field(default_factory=list)
    fault_ended_at: float | None = None
    report: dict[str, Any] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)
    #: the state topic's configuration (the workers do not create topics here)
    state_configs: dict[str, str] = field(
        default_factory=lambda: {"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"}
    )
    # rows of repositories starting with this are not the stream's (ingest's, say): the
    # model leaves them out, the test checks them itself
    foreign_prefix: str | None = None
    # what verify() read: the outcome topic in offset order per partition, and the rows
    seen_outcomes: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    rows: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    _count: int = 0

    def __post_init__(self) -> None:
        self.prefix = f"f{self.name}{os.getpid()}{int(time.time())}"

    @property
    def input_topic(self) -> str:
        return f"{self.prefix}.events"

    @property
    def outcome_topic(self) -> str:
        return f"{self.prefix}.outcomes"

    @property
    def state_topic(self) -> str:
        return f"{self.prefix}.state"

    @property
    def group(self) -> str:
        return f"{self.prefix}-group"

    async def setup(self) -> None:
        configs = {"min.insync.replicas": "2"} if self.replication > 1 else {}
        topics = [
            NewTopic(t, PARTITIONS, self.replication, topic_configs=configs)
            for t in (self.input_topic, self.outcome_topic, f"{self.input_topic}.dlq")
        ] + [
            # the state topic replicated like the others: on the replicated stack a
            # single replica on a killed broker would stall every batch
            NewTopic(
                self.state_topic,
                PARTITIONS,
                self.replication,
                topic_configs={**self.state_configs, **configs},
            )
        ]
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka)
        await admin.start()
        try:
            await _created(admin, topics)
        finally:
            await admin.close()

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OCITAG_", "KAFKA_", "DATABASE_"))
        }
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.kafka,
            DATABASE_URL=self.database_url,
            OCITAG_INPUT_TOPIC=self.input_topic,
            OCITAG_OUTCOME_TOPIC=self.outcome_topic,
            OCITAG_DLQ_TOPIC=f"{self.input_topic}.dlq",
            OCITAG_STATE_TOPIC=self.state_topic,
            OCITAG_GROUP_ID=self.group,
            OCITAG_HTTP_PORT="0",
            OCITAG_CREATE_TOPICS="false",
            OCITAG_LOG_FORMAT="json",
            OCITAG_LOG_LEVEL="info",
            OCITAG_SESSION_TIMEOUT_MS="6000",
            OCITAG_HEARTBEAT_INTERVAL_MS="1000",
            OCITAG_SHUTDOWN_GRACE_SECONDS="10",
            OCITAG_RETRY_BACKOFF_MAX_SECONDS="2",
            OCITAG_STARTUP_TIMEOUT_SECONDS="120",
            OCITAG_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS="5",
            OCITAG_MAX_BATCH_RECORDS="500",
        )
        env.update(self.worker_env)
        return env

    def start_worker(self) -> Worker:
        self._count += 1
        name = f"w{self._count}"
        log = self.tmp / f"{self.name}-{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "run"],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        worker = Worker(name, proc, log)
        self.workers.append(worker)
        return worker

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.proc.poll() is None]

    async def produce(self, stream: Stream, rate: float) -> None:
        """Publish the stream at about ``rate`` records/s, retrying through outages."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.kafka,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=60_000,
        )
        await producer.start()
        try:
            started = time.monotonic()
            chunk = max(1, int(rate / 20))
            for first in range(0, len(stream.records), chunk):
                part = stream.records[first : first + chunk]
                await self._send_chunk(producer, part)
                ahead = (first + chunk) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        finally:
            await producer.stop()

    async def _send_chunk(
        self, producer: AIOKafkaProducer, part: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        while True:
            try:
                futures = [
                    await producer.send(self.input_topic, v, key=k, headers=h) for k, v, h in part
                ]
                metas = [await f for f in futures]
            except Exception:  # the broker may be down on purpose: try again
                await asyncio.sleep(0.5)
                continue
            for (k, v, h), m in zip(part, metas, strict=True):
                self.published.append(Published(m.partition, m.offset, k, v, h))
            return

    async def lag(self) -> int | None:
        """Log end offsets minus the group's committed offsets, over all partitions."""
        by_partition = await self.lag_by_partition()
        return None if by_partition is None else sum(by_partition.values())

    async def lag_by_partition(self) -> dict[int, int] | None:
        """Log end offset minus the group's committed offset, per input partition."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka, group_id=self.group, enable_auto_commit=False
        )
        try:
            await consumer.start()
            tps = [TopicPartition(self.input_topic, p) for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(tps)
            return {tp.partition: ends[tp] - (await consumer.committed(tp) or 0) for tp in tps}
        except Exception:  # during a broker outage there is no answer
            return None
        finally:
            await consumer.stop()

    async def wait_drained(self, produced: int, timeout: float) -> float:
        """Seconds from the fault's end until every published record is committed. Not
        drained in time: the lag per partition, how long it had not moved, and whether
        the workers still run (their logs come with the failure: tests/faults/conftest.py)."""
        deadline = time.monotonic() + timeout
        lag: dict[int, int] | None = None
        moved = time.monotonic()
        while time.monotonic() < deadline:
            if len(self.published) >= produced:
                now = await self.lag_by_partition()
                if now is not None and not sum(now.values()):
                    end = time.monotonic()
                    return end - (self.fault_ended_at or end)
                if now is not None and now != lag:  # (None: no answer during an outage)
                    lag, moved = now, time.monotonic()
            await asyncio.sleep(0.25)
        exits = {w.name: w.proc.poll() for w in self.workers}
        raise AssertionError(
            f"{self.name}: not drained within {timeout} s (lag per partition {lag}, unchanged "
            f"for {time.monotonic() - moved:.0f} s; workers' exit codes, None: running, {exits})"
        )

    async def stop_all(self) -> None:
        for w in self.live():
            w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()

    async def outcomes(self) -> list[tuple[bytes | None, bytes]]:
        consumer = AIOKafkaConsumer(
            self.outcome_topic,
            bootstrap_servers=self.kafka,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.outcome_topic, p) for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(tps)
            found: list[tuple[bytes | None, bytes]] = []

            async def behind() -> bool:
                for tp in tps:
                    if await consumer.position(tp) < ends[tp]:
                        return True
                return False

            while await behind():
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    found.extend((r.key, r.value) for r in records)
            return found
        finally:
            await consumer.stop()

    def replay(self) -> tuple[Model, dict[str, Summary], int]:
        """The reference model after every published input in offset order per
        partition: the model, each input's expected outcome by outcome id, the inputs."""
        expected: dict[str, Summary] = {}
        model = Model()
        by_partition: dict[int, list[Published]] = defaultdict(list)
        for p in self.published:
            by_partition[p.partition].append(p)
        inputs = 0
        for partition, records in by_partition.items():
            records.sort(key=lambda r: r.offset)
            offsets = [r.offset for r in records]
            # (others' records fill gaps in between when another producer shares the topic)
            assert self.foreign_prefix is not None or offsets == list(
                range(offsets[0], offsets[0] + len(offsets))
            ), f"gap in produced p{partition}"
            for r in records:
                inputs += 1
                raw = RawRecord(
                    self.input_topic, partition, r.offset, 0, r.key, r.value, tuple(r.headers)
                )
                decoded = decode(raw, 65_536)
                if isinstance(decoded, TagMoved | TagDeleted):
                    oid, want = (
                        outcome_id(decoded.source, decoded.id, decoded.fingerprint),
                        model.deliver(decoded),
                    )
                elif isinstance(decoded, Invalid):
                    oid = outcome_id(decoded.source, decoded.id, decoded.fingerprint)
                    want = model.deliver_invalid(decoded.source, decoded.id, decoded.fingerprint)
                else:
                    assert isinstance(decoded, Undecodable)
                    oid, want = record_outcome_id(raw, decoded.problem.kind), Summary(400)
                if want.reason == "id-reused":  # not stored: the record's own outcome
                    oid = record_outcome_id(raw, ProblemKind.ID_REUSED)
                expected.setdefault(oid, want)
        return model, expected, inputs

    def model_rows(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        """The rows the model holds, as ``rows`` holds the store's (``row_of``)."""
        return {k: row_of(r) for k, r in self.replay()[0].rows.items()}

    async def stored_rows(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        """Every row of the store, by (repository, tag), as ``row_of`` shows it."""
        conn = await asyncpg.connect(self.database_url)
        try:
            rows = await conn.fetch(
                "SELECT repository, tag, artifact, last_modified_by, last_modified_on, version, "
                "deleted_on, deleted_by FROM ocitags"
            )
        finally:
            await conn.close()
        return {(r["repository"], r["tag"]): row_of(r) for r in rows}

    async def verify(self) -> dict[str, Any]:
        """Every input has an outcome, all outcomes of one input are identical and as
        the model says, the rows are the model's, no offset was skipped."""
        model, expected, inputs = self.replay()
        observed: dict[str, set[bytes]] = defaultdict(set)
        outcomes = await self.outcomes()
        for _, value in outcomes:
            observed[json.loads(value)["id"]].add(value)
        missing = [oid for oid in expected if oid not in observed]
        assert not missing, f"{len(missing)} inputs without an outcome, e.g. {missing[:3]}"
        differing = {oid: vals for oid, vals in observed.items() if len(vals) > 1}
        assert not differing, (
            f"{len(differing)} inputs with differing outcomes: {list(differing.items())[:1]}"
        )
        wrong = [
            (oid, want, summary(next(iter(observed[oid]))))
            for oid, want in expected.items()
            if summary(next(iter(observed[oid]))) != want
        ]
        assert not wrong, f"{len(wrong)} outcomes differ from the model, e.g. {wrong[:3]}"
        foreign = self.foreign_prefix
        self.rows = await self.stored_rows()
        self.seen_outcomes = outcomes
        got = {
            k: v for k, v in self.rows.items() if foreign is None or not k[0].startswith(foreign)
        }
        want_rows = {k: row_of(r) for k, r in model.rows.items()}
        wrong_rows = [k for k in want_rows.keys() | got.keys() if want_rows.get(k) != got.get(k)]
        assert not wrong_rows, (
            f"{len(wrong_rows)} rows differ from the model, e.g. {wrong_rows[:3]}"
        )
        assert await self.lag() == 0, "offsets left uncommitted"
        changes = Counter(w.change for w in expected.values())
        if self.events >= 1_000:  # the stream exercised the deletion rules
            assert changes["deleted"] and any(w.status == 404 for w in expected.values())
        self.report.update(
            inputs=inputs,
            tags=len(want_rows),
            tombstones=sum(1 for r in model.rows.values() if not r.live),
            statuses=dict(sorted(Counter(w.status for w in expected.values()).items())),
            deleted=changes["deleted"],
            outcomes=len(outcomes),
            duplicate_outcomes=sum(
                1
                for _, v in outcomes
                if foreign is None or not json.loads(v).get("subject", "").startswith(foreign)
            )
            - inputs,
        )
        return self.report


ROW_FIELDS = ("artifact", "last_modified_by", "last_modified_on", "version", "deleted_on",
              "deleted_by")  # fmt: skip


def row_of(r: Any) -> tuple[Any, ...]:
    """What a row (the store's record, or the model's) is compared on: ROW_FIELDS."""
    if isinstance(r, asyncpg.Record):
        return tuple(r[name] for name in ROW_FIELDS)
    return tuple(getattr(r, name) for name in ROW_FIELDS)


@contextlib.asynccontextmanager
async def scenario(
    name: str,
    kafka: str,
    database_url: str,
    tmp: Path,
    events: int,
    tags: int,
    seed: int,
    replication: int = 1,
) -> AsyncIterator[Scenario]:
    s = Scenario(name, kafka, database_url, tmp, events, tags, seed, replication)
    await s.setup()
    try:
        yield s
    finally:
        await s.stop_all()
