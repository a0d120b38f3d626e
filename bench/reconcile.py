"""``make bench-reconcile``: how fast reconcile scans a registry, and how that scales
with ``OCITAG_REGISTRY_CONCURRENCY``.

A local CNCF Distribution registry (``deploy/local/stack tools``) gets
``BENCH_RECONCILE_TAGS`` tags (default 1,000) in ``BENCH_RECONCILE_REPOSITORIES``
repositories (default 10): one image pushed per repository with crane, the other tags
written by PUTting the same manifest under new tags through the HTTP API (crane per
tag would take minutes). The scan is reconcile's own (``worker.reconcile.scan``):
``tags/list`` per repository, ``HEAD`` per tag, diffed against an empty store, so the
figure is the registry side alone (publishing is the worker's producer, measured by
``make bench``). Each concurrency is run ``BENCH_REPEAT`` times (default 3), the levels
round-robin, and the median is reported. A second set adds ``BENCH_RECONCILE_RTT_MS``
(default 20) of simulated round-trip time to every request, as a registry across a
network has: there concurrency is what scales. The last rows repeat concurrency 1 and
the best local one with htpasswd auth on (the registry checks bcrypt on every request).

Output: a table on stdout, JSON in bench/results/reconcile-<time>.json.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

import httpx

from bench.report import table
from bench.services import code_version, cpu_seconds, env_int, machine, write_results
from tests.helpers.images import Crane
from tests.helpers.registry import Registry
from worker.oci import MANIFEST_ACCEPT, RegistryClient
from worker.oci_config import parse_endpoints
from worker.reconcile.diff import LiveRecord, RepositoryDiff
from worker.reconcile.scan import Scanner

USER, PASSWORD = "bench", "bench-secret"


class EmptyStore:
    async def repositories(self, host: str) -> list[str]:
        return []

    async def live(self, repository: str) -> dict[str, LiveRecord]:
        return {}


async def populate(registry: Registry, crane: Crane, repositories: int, tags: int) -> list[str]:
    """``tags`` tags over ``repositories`` repositories; the repository names."""
    names = [f"bench/repo-{index:02d}" for index in range(repositories)]
    auth = (USER, PASSWORD) if registry.users else None
    async with httpx.AsyncClient(base_url=registry.url, auth=auth, timeout=30) as http:
        for index, name in enumerate(names):
            await asyncio.to_thread(crane.push, name, "seed", f"bench-{index}")
            got = await http.get(f"/v2/{name}/manifests/seed", headers={"Accept": MANIFEST_ACCEPT})
            got.raise_for_status()
            body, media_type = got.content, got.headers["content-type"]
            per_repository = tags // repositories - 1 + (index < tags % repositories)
            slots = asyncio.Semaphore(16)
            await asyncio.gather(
                *(
                    put_manifest(http, slots, name, f"t{n:05d}", body=body, media_type=media_type)
                    for n in range(per_repository)
                )
            )
    return names


async def put_manifest(
    http: httpx.AsyncClient,
    slots: asyncio.Semaphore,
    name: str,
    tag: str,
    *,
    body: bytes,
    media_type: str,
) -> None:
    """Tag an existing manifest: a manifest PUT under a new tag, no blobs."""
    async with slots:
        response = await http.put(
            f"/v2/{name}/manifests/{tag}", content=body, headers={"Content-Type": media_type}
        )
        response.raise_for_status()


class DelayedTransport(httpx.AsyncHTTPTransport):
    """Adds a round-trip time to every request: a registry across a network, where a
    scan waits on latency rather than on CPU (the local registry answers in well under a
    millisecond)."""

    def __init__(self, rtt: float, concurrency: int) -> None:
        super().__init__(limits=httpx.Limits(max_connections=concurrency))
        self._rtt = rtt

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self._rtt)
        return await super().handle_async_request(request)


async def scan_once(
    registry: Registry, names: list[str], concurrency: int, rtt: float = 0.0
) -> dict[str, Any]:
    credentials = f"{USER}:{PASSWORD}@" if registry.users else ""
    endpoints = parse_endpoints(f"{registry.host}=http://{credentials}{registry.host}")
    transport = DelayedTransport(rtt, concurrency) if rtt else None
    async with RegistryClient(endpoints, concurrency=concurrency, transport=transport) as client:
        scanner = Scanner(client, EmptyStore(), concurrency=concurrency)
        repositories = [f"{registry.host}/{name}" for name in names]

        async def ignore(_: RepositoryDiff) -> None:
            pass

        assert registry.process is not None
        pid = registry.process.pid
        began, cpu, registry_cpu = time.perf_counter(), time.process_time(), cpu_seconds(pid)
        result = await scanner.scan(repositories, ignore)
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu
        registry_cpu = (cpu_seconds(pid) or 0.0) - (registry_cpu or 0.0)
    assert not result.failures, result.failures
    return {
        "tags": result.tags,
        "seconds": seconds,
        "tags_per_second": result.tags / seconds,
        "client_cpu_us_per_tag": cpu / result.tags * 1e6,
        "registry_cpu_us_per_tag": registry_cpu / result.tags * 1e6,
    }


def summarize(
    concurrency: int, auth: bool, runs: list[dict[str, Any]], rtt: float
) -> dict[str, Any]:
    rates = sorted(r["tags_per_second"] for r in runs)
    return {
        "concurrency": concurrency,
        "auth": "htpasswd" if auth else "none",
        "rtt_ms": round(rtt * 1000),
        "tags": runs[0]["tags"],
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "median_tags_per_second": statistics.median(rates),
        "client_cpu_us_per_tag": statistics.median(r["client_cpu_us_per_tag"] for r in runs),
        "registry_cpu_us_per_tag": statistics.median(r["registry_cpu_us_per_tag"] for r in runs),
        "best_tags_per_second": rates[-1],
        "runs": runs,
    }


async def measure(
    registry: Registry,
    names: list[str],
    levels: list[int],
    repeat: int,
    *,
    auth: bool,
    rtt: float = 0.0,
) -> list[dict[str, Any]]:
    """Round-robin over the levels, ``repeat`` rounds: a machine shared with other work
    slows every level alike instead of whichever ran at the wrong moment."""
    runs: dict[int, list[dict[str, Any]]] = {level: [] for level in levels}
    await scan_once(registry, names, levels[-1])  # warm-up: connections, registry caches
    for _ in range(repeat):
        for level in levels:
            runs[level].append(await scan_once(registry, names, level, rtt))
    return [summarize(level, auth, runs[level], rtt) for level in levels]


async def bench() -> dict[str, Any]:
    tags = env_int("BENCH_RECONCILE_TAGS", 1_000)
    repositories = env_int("BENCH_RECONCILE_REPOSITORIES", 10)
    repeat = env_int("BENCH_REPEAT", 3)
    levels = [
        int(v) for v in os.environ.get("BENCH_RECONCILE_CONCURRENCY", "1,2,4,8,16,32").split(",")
    ]
    rtt = env_int("BENCH_RECONCILE_RTT_MS", 20) / 1000
    rows: list[dict[str, Any]] = []
    with Registry() as registry:
        names = await populate(registry, Crane(registry), repositories, tags)
        rows.extend(await measure(registry, names, levels, repeat, auth=False))
        if rtt:
            rows.extend(await measure(registry, names, levels, repeat, auth=False, rtt=rtt))
    best = max((r for r in rows if not r["rtt_ms"]), key=lambda r: r["median_tags_per_second"])[
        "concurrency"
    ]
    with Registry(users={USER: PASSWORD}) as registry:
        names = await populate(registry, Crane(registry, USER, PASSWORD), repositories, tags)
        rows.extend(await measure(registry, names, sorted({1, best}), repeat, auth=True))
    for row in rows:  # against concurrency 1 of the same kind of run
        single = next(
            r["median_tags_per_second"]
            for r in rows
            if (r["concurrency"], r["auth"], r["rtt_ms"]) == (1, row["auth"], row["rtt_ms"])
        )
        row["speed_up"] = row["median_tags_per_second"] / single
    return {
        "benchmark": "reconcile",
        "tags": tags,
        "repositories": repositories,
        "repeat": repeat,
        "cpus": os.cpu_count(),
        "machine": machine(),
        "code": code_version(),
        "rows": rows,
    }


def render(results: dict[str, Any]) -> str:
    headers = [
        "concurrency",
        "auth",
        "RTT ms",
        "tags",
        "median s",
        "tags/s (median)",
        "tags/s (best)",
        "x c=1",
        "client CPU us/tag",
        "registry CPU us/tag",
    ]
    rows = [
        [
            r["concurrency"],
            r["auth"],
            r["rtt_ms"],
            r["tags"],
            r["median_seconds"],
            r["median_tags_per_second"],
            r["best_tags_per_second"],
            r["speed_up"],
            r["client_cpu_us_per_tag"],
            r["registry_cpu_us_per_tag"],
        ]
        for r in results["rows"]
    ]
    title = (
        f"reconcile scan: {results['tags']:,} tags in {results['repositories']} repositories, "
        f"local registry, median of {results['repeat']} ({results['cpus']} CPUs, load "
        f"{results['machine']['load_average_1m_at_start']} at start)\n\n"
    )
    return title + table(headers, rows)


def main() -> None:
    results = asyncio.run(bench())
    path = write_results("reconcile", results)
    print(render(results))
    print(f"\nresults: {path} (and reconcile-latest.json)")


if __name__ == "__main__":
    main()
