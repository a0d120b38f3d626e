"""The watch's fan-out alone (``make bench-fanout``): the api's CPU per event delivered
to one watcher, in process, without sockets, Kafka or PostgreSQL — the figure
``make bench-watch`` measures end to end, here without the shared machine's network and
client noise.

BENCH_FANOUT_WATCHERS (100 and 1000) watches of every repository are live on one
``Fanout`` (the api's feed without its consumer); BENCH_FANOUT_READS (20) reads of
BENCH_FANOUT_RECORDS (200) records each are framed by the feed (ids sealed as in the api)
and offered to all; every watch passes them to a writer that drops the bytes. Two ways
per size: record by record (grants configured: each record's scope, grant and version
checked per watcher) and joined once (no grants: each read's frames joined once, every
watcher writes the same pieces). CPU is the process's (``time.process_time``) from the
first read to the last watcher done, divided by watchers times records. A table on stdout,
JSON in bench/results/fanout-*.json.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.report import table
from bench.services import RESULTS, code_version, env_int, machine, write_results
from worker.api.feed import Fanout, Subscription
from worker.api.resume import EventIds
from worker.api.store import Stored
from worker.api.watch import Scope, Watch, WatchOptions
from worker.api.watchrules import Change


class _Feed:
    """The ``Feed`` of a Fanout that a loop below feeds (no consumer, no replays)."""

    def __init__(self) -> None:
        self.ids = EventIds(os.urandom(32))
        self.fanout = Fanout(2, self.ids)

    def subscribe(self, limit: int) -> Subscription:
        return self.fanout.subscribe(limit)

    def unsubscribe(self, subscription: Subscription) -> None:
        self.fanout.unsubscribe(subscription)

    async def offsets(self) -> tuple[list[int], list[int]]:
        return [0, 0], list(self.fanout.positions)

    async def replay(
        self, positions: Sequence[int], until: Sequence[int]
    ) -> AsyncIterator[list[Change]]:
        return
        yield  # an async generator that yields nothing


class _EmptyStore:
    async def snapshot(
        self, repository: str | None, after: tuple[str, str], limit: int
    ) -> list[Stored]:
        return []


class _Dropped:
    async def write(self, data: bytes) -> None:
        return None


def _grants(tag: str) -> bool:
    return not tag.endswith(":secret")


async def one(watchers: int, joined: bool, reads: int, records: int) -> dict[str, Any]:
    feed = _Feed()
    options = WatchOptions(queue_events=1_000_000, heartbeat_seconds=15.0, snapshot_page=100)
    scope = Scope(None, _grants, reads_all=joined)
    watches = [
        Watch(_Dropped(), feed, _EmptyStore(), options=options, scope=scope, fields={})  # type: ignore[arg-type]
        for _ in range(watchers)
    ]
    tasks = [asyncio.create_task(w.run(None)) for w in watches]
    await _until(lambda: all(not w.subscription.outbox.catching_up for w in watches))
    started = time.process_time()
    offset = 0
    for version in range(1, reads + 1):
        batch = []
        for i in range(records):
            key = f"registry.example.com/team/app:tag-{i:05}".encode()
            value = orjson.dumps({"tag": key.decode(), "version": version})
            batch.append(feed.fanout.read(i % 2, offset + i // 2, key, value, version))
        offset += records // 2
        feed.fanout.dispatch(batch)
        await _until(lambda: not any(w.subscription.outbox.queued for w in watches))
    cpu = time.process_time() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    deliveries = watchers * reads * records
    return {
        "watchers": watchers,
        "path": "joined once" if joined else "record by record",
        "deliveries": deliveries,
        "cpu_seconds": round(cpu, 3),
        "cpu_us_per_delivery": round(cpu / deliveries * 1e6, 3),
    }


async def _until(done: Callable[[], bool], turns: int = 1_000_000) -> None:
    """Let the watches run until ``done`` (each turn one pass of the event loop)."""
    for _ in range(turns):
        if done():
            return
        await asyncio.sleep(0)
    raise TimeoutError("the watches did not get there")


def main() -> None:
    reads = env_int("BENCH_FANOUT_READS", 20)
    records = env_int("BENCH_FANOUT_RECORDS", 200)
    sizes = [int(n) for n in os.environ.get("BENCH_FANOUT_WATCHERS", "100,1000").split(",")]
    rows = [asyncio.run(one(n, joined, reads, records)) for n in sizes for joined in (False, True)]
    results = {
        "benchmark": "fanout",
        "config": {"reads": reads, "records_per_read": records, "watchers": sizes},
        "runs": rows,
        "code": code_version(),
        "machine": machine(),
    }
    headers = ["watchers", "path", "deliveries", "CPU s", "µs per delivery"]
    print(table(headers, [list(r.values()) for r in rows]))
    directory = Path(os.environ.get("BENCH_RESULTS", RESULTS))
    print(f"\nresults: {write_results('fanout', results, directory)}")


if __name__ == "__main__":
    main()
