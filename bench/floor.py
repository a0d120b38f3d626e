"""The floor (issue "Close to the floor"): the leanest durable batched consumer doing the
worker's durable work on the same libraries, run as its own process beside the worker.

Per fetched batch (aiokafka ``getmany``, the worker's consumer settings), in order:

1. one transaction with two ``unnest`` statements: insert the batch's ``(source, id)``
   pairs into ``floor_seen`` and get back the ones not seen before; then one guarded
   upsert of the newest of those events per tag into ``floor_tags`` (written only if
   its (time, source, id) is greater than the row's); COMMIT, durable
   (``synchronous_commit`` is the server's, as for the worker);
2. one outcome per event, produced with ``acks=all`` (idempotent, the worker's
   producer settings) and every acknowledgement awaited;
3. then the offset commit.

It validates nothing (``json.loads`` and the members it needs), builds no problem
details, fingerprints nothing and keeps no outcome to replay (a redelivery gets a 200
marked ``replay``). Outcomes name their input by ``causationid`` (or ``data.instance``
for a record it cannot read) so that the benchmark's completeness check and latency
matching read them like the worker's: 200 for the event written as its tag's newest,
409 for the others.

Its only readout is a plain-text ``/metrics`` with the few names the benchmark's runner
polls (consumed, committed, last commit time, assigned partitions, batches), updated
once per batch: not a metrics library.

Environment (as ``bench.runner.WorkerProcess`` sets it for the worker):
KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, OCITAG_INPUT_TOPIC, OCITAG_OUTCOME_TOPIC,
OCITAG_GROUP_ID, OCITAG_HTTP_HOST, OCITAG_HTTP_PORT. The database must hold ``SCHEMA``
(``create_schema``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.structs import ConsumerRecord, TopicPartition

SCHEMA = """
CREATE TABLE floor_seen (
    source text NOT NULL,
    id     text NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE TABLE floor_tags (
    repository text        NOT NULL,
    tag        text        NOT NULL,
    artifact   text        NOT NULL,
    event_time timestamptz NOT NULL,
    source     text        NOT NULL,
    id         text        NOT NULL,
    PRIMARY KEY (repository, tag)
);
"""

_SEEN = """
INSERT INTO floor_seen (source, id)
SELECT s, i FROM unnest($1::text[], $2::text[]) AS u(s, i)
ON CONFLICT DO NOTHING
RETURNING source, id
"""

_UPSERT = """
INSERT INTO floor_tags AS t (repository, tag, artifact, event_time, source, id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                     $6::text[])
ON CONFLICT (repository, tag) DO UPDATE
SET artifact = EXCLUDED.artifact, event_time = EXCLUDED.event_time,
    source = EXCLUDED.source, id = EXCLUDED.id
WHERE (t.event_time, t.source, t.id) < (EXCLUDED.event_time, EXCLUDED.source, EXCLUDED.id)
RETURNING repository, tag
"""

_HEADERS = [("content-type", b"application/cloudevents+json")]
MAX_RECORDS = 2_000  # the worker's default max_batch_records


async def create_schema(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(SCHEMA)
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class Event:
    """The members of one input the floor uses."""

    source: str
    id: str
    repository: str
    tag: str
    artifact: str
    time: datetime

    @property
    def order(self) -> tuple[datetime, str, str]:
        return (self.time, self.source, self.id)


def read(record: ConsumerRecord[bytes, bytes]) -> Event | None:
    """Structured mode (attributes in the body) or binary (``ce_`` headers); no checks
    beyond what reading needs."""
    try:
        body: dict[str, Any] = orjson.loads(record.value or b"")
        headers = {k: v for k, v in record.headers or ()}
        if "ce_id" in headers:
            attributes = {k[3:]: v.decode() for k, v in headers.items() if k.startswith("ce_")}
            data = body
        else:
            attributes, data = body, body["data"]
        return Event(
            attributes["source"],
            attributes["id"],
            data["repository"],
            data["tag"],
            data["artifact"],
            datetime.fromisoformat(attributes["time"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
        return None


def _outcome(record: ConsumerRecord[bytes, bytes], event: Event | None, status: int) -> bytes:
    if event is None:
        instance = f"urn:kafka:{record.topic}:{record.partition}:{record.offset}"
        return orjson.dumps({"specversion": "1.0", "status": 400, "data": {"instance": instance}})
    return orjson.dumps(
        {
            "specversion": "1.0",
            "source": "urn:ocitag-floor",
            "type": "floor.outcome",
            "status": status,
            "causationid": event.id,
            "causationsource": event.source,
            "data": {"repository": event.repository, "tag": event.tag},
        }
    )


async def apply(conn: asyncpg.Connection, events: Sequence[Event | None]) -> list[int]:
    """One transaction, two statements; each event's status (200 written as its tag's
    newest or a redelivery, 409 not written, 400 unreadable)."""
    pairs = {(e.source, e.id): e for e in events if e is not None}
    async with conn.transaction():
        rows = await conn.fetch(_SEEN, [k[0] for k in pairs], [k[1] for k in pairs])
        new = {(r["source"], r["id"]) for r in rows}
        newest: dict[tuple[str, str], Event] = {}
        for key in new:
            fresh = pairs[key]
            tag = (fresh.repository, fresh.tag)
            best = newest.get(tag)
            if best is None or best.order < fresh.order:
                newest[tag] = fresh
        chosen = list(newest.values())
        written = await conn.fetch(
            _UPSERT,
            [e.repository for e in chosen],
            [e.tag for e in chosen],
            [e.artifact for e in chosen],
            [e.time for e in chosen],
            [e.source for e in chosen],
            [e.id for e in chosen],
        )
    won = {(r["repository"], r["tag"]) for r in written}
    statuses = []
    for event in events:
        if event is None:
            statuses.append(400)
        elif (event.source, event.id) not in new:
            statuses.append(200)  # a redelivery (or a repeat within the batch)
        elif (event.repository, event.tag) in won and _same(
            newest[(event.repository, event.tag)], event
        ):
            statuses.append(200)
        else:
            statuses.append(409)
    return statuses


def _same(a: Event, b: Event) -> bool:
    return (a.source, a.id) == (b.source, b.id)


class Floor(ConsumerRebalanceListener):  # type: ignore[misc]
    """The loop, and the counters its /metrics shows."""

    def __init__(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, conn: asyncpg.Connection
    ) -> None:
        self.consumer, self.producer, self.conn = consumer, producer, conn
        self.outcome_topic = os.environ["OCITAG_OUTCOME_TOPIC"]
        self.consumed = 0
        self.committed = 0
        self.batches = 0
        self.batch_seconds = 0.0
        self.last_commit = 0.0
        self.assigned = 0
        self.stopping = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.assigned = 0

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned = len(assigned)

    async def run(self) -> None:
        while not self.stopping.is_set():
            fetched = await self.consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
            if fetched:
                await self.batch(fetched)

    async def batch(
        self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        started = time.perf_counter()
        records = [r for batch in fetched.values() for r in batch]
        self.consumed += len(records)
        events = [read(r) for r in records]
        statuses = await apply(self.conn, events)
        futures = [
            await self.producer.send(
                self.outcome_topic, _outcome(r, e, s), key=r.key, headers=_HEADERS
            )
            for r, e, s in zip(records, events, statuses, strict=True)
        ]
        await asyncio.gather(*futures)
        await self.consumer.commit({tp: batch[-1].offset + 1 for tp, batch in fetched.items()})
        self.committed += len(records)
        self.last_commit = time.time()
        self.batches += 1
        self.batch_seconds += time.perf_counter() - started

    def metrics(self) -> str:
        return "".join(
            f"{name} {value}\n"
            for name, value in (
                ("ocitag_events_consumed_total", self.consumed),
                ("ocitag_events_committed_total", self.committed),
                ("ocitag_last_commit_timestamp_seconds", self.last_commit),
                ("ocitag_assigned_partitions", self.assigned),
                ("ocitag_batch_processing_seconds_count", self.batches),
                ("ocitag_batch_processing_seconds_sum", self.batch_seconds),
                ("ocitag_batch_size_events_sum", self.committed),
            )
        )


async def serve(floor: Floor) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=floor.metrics())

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = int(os.environ.get("OCITAG_HTTP_PORT", "8080"))
    await web.TCPSite(runner, os.environ.get("OCITAG_HTTP_HOST", "127.0.0.1"), port).start()
    return runner


async def main() -> None:
    kafka = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    group = os.environ["OCITAG_GROUP_ID"]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=MAX_RECORDS,
        fetch_max_bytes=16_777_216,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=1_048_576,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_batch_size=262_144,
    )
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    floor = Floor(consumer, producer, conn)
    runner = await serve(floor)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, floor.stopping.set)
    await producer.start()
    await consumer.start()
    consumer.subscribe([os.environ["OCITAG_INPUT_TOPIC"]], listener=floor)
    task = asyncio.create_task(floor.run())
    try:
        await floor.stopping.wait()
        await task  # the batch in hand is finished and committed
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await consumer.stop()
        await producer.stop()
        await conn.close()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
