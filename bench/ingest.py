"""``make bench-ingest``: how fast ``ocitag-worker ingest`` answers 2xx, beside a plain
aiokafka produce of the same events (the raw limit of the broker and client).

Ingest runs as its own process (``python -m worker ingest``, default settings except
ports, topic and log level warning), on a fresh 6-partition topic of the local broker;
the deliveries are distribution notifications (``POST /webhooks/distribution``), each
event with its own id, built before anything is timed. Scenarios:

- **closed loop**: ``--concurrency`` clients post back to back for ``--seconds``:
  deliveries/s and the latency of a 2xx (single-event and 100-event deliveries);
- **fixed rate**: single-event deliveries offered at ``--rate``/s (open loop: a slow
  answer does not slow the offer): latency p50/p99/max;
- **raw**: the same events produced by one plain ``AIOKafkaProducer`` (acks=all,
  idempotent), ``send_and_wait`` per delivery's events, at the same concurrency and rate.

A non-2xx answer counts as an error (the table shows them). Table on stdout, JSON in
``bench/results/ingest-latest.json``. The client shares the machine (2 cores in
development) with ingest and the broker: read the figures as a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from bench.report import percentile, table
from bench.services import (
    CLOCK_TICKS,
    RESULTS,
    create_topics,
    delete_topics,
    discover,
    free_port,
    unique,
    vm_kib,
)
from worker.ingest import distribution
from worker.ingest.delivery import cloud_event, messages, plan
from worker.ingest.mapping import TagChange
from worker.kafka import Message

TOKEN = "Bearer bench-ingest"
DIGEST = "sha256:" + "ab" * 32
HOST = "registry.bench.example"


@dataclass
class Result:
    scenario: str
    events_per_delivery: int
    deliveries: int
    errors: int
    seconds: float
    deliveries_per_s: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: CPU of the ingest process per delivery (the capacity of one core: 1000 / this)
    cpu_ms_per_delivery: float | None = None
    #: the ingest process's peak RSS so far (VmHWM), after this scenario: what the Helm
    #: chart's memory request for ingest is sized from
    peak_rss_mib: float | None = None


def deliveries(run: str, size: int) -> Iterator[bytes]:
    """Distribution envelopes of ``size`` tagged pushes, every event id new."""
    n = 0
    while True:
        events = []
        for _ in range(size):
            events.append(
                {
                    "id": f"{run}-{n}",
                    "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                    "action": "push",
                    "target": {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": DIGEST,
                        "repository": f"team/app{n % 50}",
                        "url": f"https://{HOST}/v2/team/app/manifests/{DIGEST}",
                        "tag": f"v{n % 997}",
                    },
                    "request": {"host": HOST, "method": "PUT"},
                    "actor": {"name": "bench"},
                }
            )
            n += 1
        yield orjson.dumps({"events": events})


def records(topic: str, body: bytes) -> list[Message]:
    """The Kafka records ingest would produce for ``body`` (for the raw producer)."""
    planned = plan(distribution.map_delivery(body, {}))
    events: list[TagChange] = list(planned.events)
    return messages(topic, [cloud_event(e) for e in events])


def summarise(name: str, size: int, latencies: list[float], errors: int, seconds: float) -> Result:
    ordered = sorted(latencies)
    done = len(latencies)
    return Result(
        scenario=name,
        events_per_delivery=size,
        deliveries=done,
        errors=errors,
        seconds=round(seconds, 2),
        deliveries_per_s=done / seconds if seconds else 0.0,
        events_per_s=done * size / seconds if seconds else 0.0,
        p50_ms=percentile(ordered, 50) * 1000,
        p99_ms=percentile(ordered, 99) * 1000,
        max_ms=(ordered[-1] * 1000) if ordered else float("nan"),
    )


async def closed_loop(
    call: Callable[[bytes], Awaitable[bool]],
    bodies: Iterator[bytes],
    concurrency: int,
    seconds: float,
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    stop_at = started + seconds

    async def client() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            body = next(bodies)
            t0 = time.perf_counter()
            if await call(body):
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


async def fixed_rate(
    call: Callable[[bytes], Awaitable[bool]], bodies: Iterator[bytes], rate: float, seconds: float
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    total = int(rate * seconds)

    async def one(body: bytes) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        if await call(body):
            latencies.append(time.perf_counter() - t0)
        else:
            errors += 1

    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(next(bodies))))
    await asyncio.gather(*tasks)
    return latencies, errors, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def per_delivery(pid: int, before: float, result: Result) -> float | None:
    answered = result.deliveries + result.errors
    return (cpu_seconds(pid) - before) * 1000 / answered if answered else None


async def wait_ready(metrics_port: int, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"ingest exited with {process.returncode}")
            try:
                async with http.get(f"http://127.0.0.1:{metrics_port}/readyz") as response:
                    body = await response.json()
                    if "kafka connected" in str(body.get("reason")):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("ingest did not connect to Kafka within 60 s")


async def run(args: argparse.Namespace) -> list[Result]:
    services = discover()
    topic = unique("bench_ingest")
    await create_topics(services.kafka, [topic], 6)
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": services.kafka,
        "OCITAG_INPUT_TOPIC": topic,
        "OCITAG_INGEST_HOST": "127.0.0.1",
        "OCITAG_INGEST_PORT": str(port),
        "OCITAG_HTTP_HOST": "127.0.0.1",
        "OCITAG_HTTP_PORT": str(metrics_port),
        "OCITAG_INGEST_DISTRIBUTION_SECRET": TOKEN,
        "OCITAG_LOG_LEVEL": "warning",
    }
    process = await asyncio.to_thread(start_ingest, env)
    results: list[Result] = []
    try:
        await wait_ready(metrics_port, process)
        url = f"http://127.0.0.1:{port}/webhooks/distribution"
        connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def post(body: bytes) -> bool:
                async with http.post(url, data=body, headers={"Authorization": TOKEN}) as r:
                    await r.read()
                    return r.status == 200

            for _ in range(20):  # warm-up: connections, metadata
                await post(next(deliveries(unique("warm"), 1)))
            for size, concurrency in ((1, args.concurrency), (100, max(1, args.concurrency // 4))):
                bodies = deliveries(unique("c"), size)
                cpu = cpu_seconds(process.pid)
                lat, err, secs = await closed_loop(post, bodies, concurrency, args.seconds)
                result = summarise(f"ingest closed c={concurrency}", size, lat, err, secs)
                result.cpu_ms_per_delivery = per_delivery(process.pid, cpu, result)
                result.peak_rss_mib = peak_rss_mib(process.pid)
                results.append(result)
            bodies = deliveries(unique("r"), 1)
            cpu = cpu_seconds(process.pid)
            lat, err, secs = await fixed_rate(post, bodies, args.rate, args.seconds)
            result = summarise(f"ingest {args.rate:g}/s", 1, lat, err, secs)
            result.cpu_ms_per_delivery = per_delivery(process.pid, cpu, result)
            result.peak_rss_mib = peak_rss_mib(process.pid)
            results.append(result)
        results.extend(await raw(services.kafka, topic, args))
    finally:
        await asyncio.to_thread(stop_ingest, process)
        await delete_topics(services.kafka, [topic])
    return results


def peak_rss_mib(pid: int) -> float | None:
    kib = vm_kib(pid, "VmHWM")
    return kib / 1024 if kib is not None else None


def start_ingest(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "ingest"], env=env, stdout=subprocess.DEVNULL
    )


def stop_ingest(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(30)


async def raw(kafka: str, topic: str, args: argparse.Namespace) -> list[Result]:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka, acks="all", enable_idempotence=True, linger_ms=2
    )
    await producer.start()
    results: list[Result] = []
    try:

        async def send(body: bytes) -> bool:
            batch = records(topic, body)
            futures = [
                await producer.send(m.topic, m.value, key=m.key, headers=m.headers) for m in batch
            ]
            await asyncio.gather(*futures)
            return True

        for size, concurrency in ((1, args.concurrency), (100, max(1, args.concurrency // 4))):
            bodies = deliveries(unique("rc"), size)
            lat, err, secs = await closed_loop(send, bodies, concurrency, args.seconds)
            results.append(summarise(f"raw aiokafka c={concurrency}", size, lat, err, secs))
        bodies = deliveries(unique("rr"), 1)
        lat, err, secs = await fixed_rate(send, bodies, args.rate, args.seconds)
        results.append(summarise(f"raw aiokafka {args.rate:g}/s", 1, lat, err, secs))
    finally:
        await producer.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(
        table(
            [
                "scenario",
                "events/delivery",
                "deliveries",
                "errors",
                "deliveries/s",
                "events/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "ingest CPU ms/delivery",
                "ingest peak RSS MiB",
            ],
            [
                [
                    r.scenario,
                    r.events_per_delivery,
                    r.deliveries,
                    r.errors,
                    r.deliveries_per_s,
                    r.events_per_s,
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.cpu_ms_per_delivery,
                    r.peak_rss_mib,
                ]
                for r in results
            ],
        )
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "time": datetime.now(UTC).isoformat(),
        "settings": vars(args),
        "goals": {"single_event_deliveries_per_s": 2000, "p99_ms_at_200_per_s": 20},
        "results": [asdict(r) for r in results],
    }
    (RESULTS / "ingest-latest.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
