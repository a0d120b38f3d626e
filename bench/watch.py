"""The watch benchmark (``make bench-watch``): many concurrent watchers on ONE api
process while the worker applies a steady stream of changes.

One worker and one api (``python -m worker run`` / ``api``) as processes on a fresh
database and fresh topics; BENCH_WATCHERS (50; the issue's target is 1,000) watches of
every repository are opened; then tag events are published straight to the input topic
at BENCH_WATCH_RATE (200 per second; target 2,000) for BENCH_WATCH_SECONDS (15), each
moving one of BENCH_WATCH_TAGS (1000) tags, its event ``time`` the moment it is sent.

Two per-event delivery latencies, on BENCH_WATCH_MEASURED (10) watchers that parse
every event (the others read and count events only: a client parsing 1,000 streams in
one Python process would measure itself):

- **applied → received** (the issue's figure): when a watcher reads the ``upsert`` minus
  the state record's Kafka timestamp, i.e. the moment the worker produced it, right
  after committing the change (read back from the state topic after the run, by tag and
  version): the state topic → the api's one consumer → fan-out → the watcher;
- **published → received**: minus the record's ``last_modified_on`` (the event's time,
  set when the bench published it), which adds the worker's own backlog.

BENCH_WATCH_GRANTS (``on``): ``off`` runs the api without grants, so that live watchers
of every repository take the fan-out's joined-once path (worker/api/watchrules.py
``takes_whole``); ``on`` checks each tag against twenty callers' grants, as in production.

Reported: those latencies' p50/p99/max, events per watcher (each must get every change),
watchers cut off, the api's CPU (seconds per second, i.e. cores) and memory (RSS before
and after the watchers, peak), the worker's and the bench's CPU. The watchers live in
the bench process, not the api's: their cost is the ``bench`` column, not ``api``. A
table on stdout, JSON in bench/results/watch-*.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.api import TOKEN, ApiProcess, digest
from bench.report import percentile, table
from bench.runner import Topics, WorkerProcess
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
    env_float,
    env_int,
    machine,
    service_pids,
    unique,
    vm_kib,
    write_results,
)
from worker.encode import build_event
from worker.timefmt import format_rfc3339, parse_rfc3339

REPOSITORY = "bench.example.com/team/app"
PARTITIONS = 6


@dataclass
class Watcher:
    measured: bool
    events: int = 0
    synced: bool = False
    latencies: list[float] = field(default_factory=list)
    #: (OCITag ID, version, when read) of every live upsert (measured watchers)
    received: list[tuple[str, int, float]] = field(default_factory=list)
    ended: str = ""


async def watch(session: aiohttp.ClientSession, url: str, watcher: Watcher) -> None:
    """One watch until cancelled; a measured one parses every event."""
    try:
        async with session.get(url, headers={"Accept": "text/event-stream"}) as response:
            if response.status != 200:
                watcher.ended = f"status {response.status}"
                return
            if watcher.measured:
                name = ""
                async for raw in response.content:
                    line = raw.decode()
                    if line.startswith("event: "):
                        name = line[7:].strip()
                        watcher.synced |= name == "synced"
                    elif line.startswith("data: ") and name == "upsert" and watcher.synced:
                        now = time.time()
                        record = json.loads(line[6:])
                        at = parse_rfc3339(record["last_modified_on"])
                        watcher.latencies.append(now - at.timestamp())
                        key = f"{record['repository']}:{record['tag']}"
                        watcher.received.append((key, record["version"], now))
                        watcher.events += 1
            else:
                tail = b""
                while chunk := await response.content.read(65536):
                    text = tail + chunk
                    watcher.synced = watcher.synced or b"event: synced" in text
                    watcher.events += text.count(b"\nevent: upsert") if watcher.synced else 0
                    tail = text[-13:]  # shorter than the pattern: never counted twice
            watcher.ended = "eof"
    except (aiohttp.ClientError, ConnectionError) as exc:
        watcher.ended = type(exc).__name__


async def publish(kafka: str, topic: str, rate: float, seconds: float, tags: int) -> int:
    """Tag events at ``rate`` per second for ``seconds``, in 10 ms ticks; returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    await producer.start()
    sent = 0
    try:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) + 1
            now = format_rfc3339(datetime.now(UTC))
            for n in range(sent, due):
                ocitag = f"{REPOSITORY}:t{n % tags}"
                event = build_event(
                    ocitag, digest(n), source="urn:bench:watch", event_id=f"w{n}", time=now
                )
                await producer.send(topic, json.dumps(event).encode(), key=ocitag.encode())
            sent = max(sent, due)
            await asyncio.sleep(0.01)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def run(services: Services) -> dict[str, Any]:
    watchers_n = env_int("BENCH_WATCHERS", 50)
    measured_n = min(env_int("BENCH_WATCH_MEASURED", 10), watchers_n)
    rate = env_float("BENCH_WATCH_RATE", 200.0)
    seconds = env_float("BENCH_WATCH_SECONDS", 15.0)
    tags = env_int("BENCH_WATCH_TAGS", 1000)
    name = unique("bench_watch")
    topics = Topics(f"{name}.events", f"{name}.outcomes", f"{name}.dlq")
    database_url = await create_database(services.database_url, name)
    await create_topics(services.kafka, [topics.input, topics.outcomes, topics.dlq], PARTITIONS)
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(
        services.kafka, database_url, topics, f"{name}-group", "warning", logs / "watch-worker.log"
    )
    limits = {
        "OCITAG_API_MAX_WATCHES": str(watchers_n + 10),
        "OCITAG_API_MAX_WATCHES_PER_CALLER": str(watchers_n + 10),
        "OCITAG_LOG_LEVEL": "warning",
    }
    grants = os.environ.get("BENCH_WATCH_GRANTS", "on") != "off"
    api = ApiProcess(worker, logs / "watch-api.log", limits, grants=grants)
    watchers = [Watcher(measured=i < measured_n) for i in range(watchers_n)]
    try:
        worker.start()
        await worker.wait_assigned(PARTITIONS, within=90)
        api.start()
        await api.wait_ready()
        assert api.proc is not None
        rss_idle = vm_kib(api.proc.pid, "VmRSS")
        url = f"http://127.0.0.1:{api.port}/ocitags/?watch=true"
        connector = aiohttp.TCPConnector(limit=watchers_n + 10)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(
            connector=connector, headers=headers, timeout=timeout
        ) as session:
            print(f"[bench-watch] opening {watchers_n} watches …", file=sys.stderr)
            tasks = [asyncio.create_task(watch(session, url, w)) for w in watchers]
            if not await _within(120, lambda: all(w.synced or w.ended for w in watchers)):
                raise TimeoutError("the watches did not all reach synced")
            rss_watching = vm_kib(api.proc.pid, "VmRSS")
            pids = {"worker": worker.pid, "api": api.proc.pid, "bench": os.getpid()}
            cpu0 = cpu_snapshot(pids, service_pids(services))
            window = time.monotonic()
            print(f"[bench-watch] {rate:g} changes/s for {seconds:g} s …", file=sys.stderr)
            sent = await publish(services.kafka, topics.input, rate, seconds, tags)
            await _within(30, lambda: all(w.events >= sent or w.ended for w in watchers))
            cpu1 = cpu_snapshot(pids, service_pids(services))
            window = time.monotonic() - window
            rss_peak = vm_kib(api.proc.pid, "VmHWM")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        produced = await produced_at(services.kafka, topics.state, PARTITIONS)
    finally:
        api.stop()
        worker.stop()
        await delete_topics(
            services.kafka, [topics.input, topics.outcomes, topics.dlq, topics.state]
        )
        await drop_databases(services.database_url, [name])
    latencies = sorted(x for w in watchers for x in w.latencies)
    applied = sorted(
        at - produced[(key, version)]
        for w in watchers
        for key, version, at in w.received
        if (key, version) in produced
    )
    counts = sorted(w.events for w in watchers)
    cpu = cpu_usage(cpu0, cpu1)
    delivered = sum(counts)
    return {
        "benchmark": "watch",
        "config": {
            "watchers": watchers_n,
            "measured_watchers": measured_n,
            "rate": rate,
            "seconds": seconds,
            "tags": tags,
            "grants": grants,
        },
        "changes_published": sent,
        "events_per_watcher": {"min": counts[0], "max": counts[-1]},
        "complete_watchers": sum(1 for c in counts if c >= sent),
        "cut_off_or_failed": sum(1 for w in watchers if w.ended and w.ended != "eof"),
        "latency_ms": _summary(applied),
        "published_latency_ms": _summary(latencies),
        "api_rss_mib": {
            "idle": _mib(rss_idle),
            "watching": _mib(rss_watching),
            "peak": _mib(rss_peak),
        },
        "cpu_cores": cpu,
        "window_seconds": round(window, 1),
        # the api's CPU per event delivered to one watcher (publishing and catch-up)
        "api_cpu_us_per_delivery": round(cpu["api"] * window / delivered * 1e6, 2)
        if delivered
        else None,
        "code": code_version(),
        "machine": machine(),
        "services": services.origin,
    }


async def produced_at(kafka: str, topic: str, partitions: int) -> dict[tuple[str, int], float]:
    """Per (OCITag ID, version) the state record's Kafka timestamp (the worker's producer
    sets it when it sends, right after the commit), in seconds: the topic read whole (the
    worker made it with the input topic's partition count)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    found: dict[tuple[str, int], float] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for records in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                for r in records:
                    version = dict(r.headers).get("version")
                    if r.key is not None and version is not None:
                        found[(r.key.decode(), int(version))] = r.timestamp / 1000
    finally:
        await consumer.stop()
    return found


def _summary(seconds: list[float]) -> dict[str, float | int | None]:
    """p50/p99/max in ms of sorted latencies."""
    return {
        "samples": len(seconds),
        "p50": round(percentile(seconds, 50) * 1000, 1) if seconds else None,
        "p99": round(percentile(seconds, 99) * 1000, 1) if seconds else None,
        "max": round(seconds[-1] * 1000, 1) if seconds else None,
    }


async def _within(seconds: float, done: Callable[[], bool]) -> bool:
    """Whether ``done`` holds within ``seconds`` (looked at every 0.2 s)."""
    for _ in range(int(seconds / 0.2)):
        if done():
            return True
        await asyncio.sleep(0.2)
    return done()


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def render(results: dict[str, Any]) -> str:
    c, lat, pub, rss, cpu = (
        results["config"],
        results["latency_ms"],
        results["published_latency_ms"],
        results["api_rss_mib"],
        results["cpu_cores"],
    )
    row = [
        c["watchers"],
        c["rate"],
        results["changes_published"],
        f"{results['complete_watchers']}/{c['watchers']}",
        results["cut_off_or_failed"],
        lat["p50"],
        lat["p99"],
        lat["max"],
        pub["p99"],
        cpu.get("api"),
        cpu.get("worker"),
        rss["idle"],
        rss["watching"],
        rss["peak"],
    ]
    headers = [
        "watchers",
        "changes/s",
        "changes",
        "complete",
        "cut off",
        "p50 ms",
        "p99 ms",
        "max ms",
        "p99 ms from publish",
        "api s/s",
        "worker cores",
        "api RSS idle MiB",
        "with watchers",
        "peak",
    ]
    return (
        table(headers, [row])
        + "\nlatency: state record produced (change applied) → event read by a watcher"
        + f"\napi CPU per delivered event: {results['api_cpu_us_per_delivery']} µs"
        + f" (window {results['window_seconds']} s)\nCPU (cores): {cpu}"
    )


def main() -> None:
    results = asyncio.run(run(discover()))
    print(render(results))
    directory = Path(os.environ.get("BENCH_RESULTS", RESULTS))
    print(f"\nresults: {write_results('watch', results, directory)}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
