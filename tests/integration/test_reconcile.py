"""Reconcile end to end: the real CNCF Distribution registry with htpasswd auth, images
pushed, moved and deleted by the real crane while no notification reaches the store
(ingest stopped), the running worker applying what reconcile publishes."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client import REGISTRY

from tests.helpers.harness import Harness, running_worker, structured
from tests.helpers.images import Crane
from tests.helpers.notifications import NotificationSink
from tests.helpers.registry import Registry, free_port
from tests.helpers.wait import eventually
from worker.identifiers import normalize_digest
from worker.kafka import Producer
from worker.oci import RegistryClient
from worker.publisher import build_event
from worker.reconcile.output import JsonLines
from worker.reconcile.run import EventSink, KafkaSink, Reconciler, parse_options, reconcile
from worker.reconcile.store import PostgresLiveRecords
from worker.settings import Settings
from worker.timefmt import format_rfc3339, parse_rfc3339

pytestmark = pytest.mark.integration

USER, PASSWORD = "alice", "pa:ss,word"
ENCODED = "pa%3Ass%2Cword"


@pytest.fixture
def registry(registry_tools: Path) -> Iterator[Registry]:
    with Registry(users={USER: PASSWORD}) as registry:
        yield registry


def reconcile_settings(
    make_settings: Callable[..., Settings], registry: Registry, **overrides: Any
) -> Settings:
    return make_settings(
        ingest_registry_endpoints=f"{registry.host}=http://{USER}:{ENCODED}@{registry.host}",
        **overrides,
    )


async def run_reconcile(
    settings: Settings, host: str, *, dry_run: bool = False
) -> tuple[dict[str, Any], set[tuple[str, str, str | None]]]:
    """One run as the command does it; (summary, {(kind, ocitag_id, artifact)})."""
    out = io.StringIO()
    code = await reconcile(settings, parse_options(host, None, dry_run, None), JsonLines(out))
    assert code == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    summary = lines[-1]
    assert summary["record"] == "summary"
    differences = {(d["kind"], d["ocitag_id"], d["artifact"]) for d in lines[:-1]}
    return summary, differences


def registry_state(crane: Crane, repositories: list[str]) -> dict[str, str]:
    """OCITag ID → artifact as crane (not our client) sees the registry."""
    state: dict[str, str] = {}
    for name in repositories:
        listed = crane.run("ls", f"{crane.registry.host}/{name}")
        for tag in listed.split():
            digest = normalize_digest(crane.digest(name, tag))
            state[f"{crane.registry.host}/{name}:{tag}"] = digest
    return state


async def live_state(pool: asyncpg.Pool) -> dict[str, str]:
    rows = await pool.fetch("SELECT repository, tag, artifact FROM live_ocitags")
    return {f"{r['repository']}:{r['tag']}": r["artifact"] for r in rows}


async def converges(pool: asyncpg.Pool, expected: dict[str, str]) -> None:
    async def same() -> bool:
        return await live_state(pool) == expected

    try:
        await eventually(same, timeout=30)
    except TimeoutError:
        assert await live_state(pool) == expected  # shows the difference


@pytest.mark.parametrize("page_size", [None, 2], ids=["one-page", "paged-n2"])
async def test_reconcile_repairs_pushes_moves_and_deletes(
    registry: Registry,
    make_settings: Callable[..., Settings],
    pool: asyncpg.Pool,
    page_size: int | None,
) -> None:
    crane = Crane(registry, USER, PASSWORD)
    host = registry.host
    crane.push("team/app", "v1", "one")
    crane.push("team/app", "v2", "two")
    crane.tag("team/app", "v1", "v3")
    crane.push("other/svc", "s1", "svc")
    crane.tag("other/svc", "s1", "s2")
    if page_size is not None:  # more tags than several pages of n=2
        for index in range(9):
            crane.tag("team/app", "v1", f"extra-{index}")
    repositories = ["team/app", "other/svc"]
    settings = reconcile_settings(make_settings, registry, registry_page_size=page_size)

    async with running_worker(settings):
        # the store starts in step with the registry (as if ingest had delivered so far)
        summary, _ = await run_reconcile(settings, host)
        assert summary["events_published"] == len(registry_state(crane, repositories))
        await converges(pool, registry_state(crane, repositories))

        # drift while no notification reaches the store
        new = normalize_digest(crane.push("team/app", "new", "new"))
        moved = normalize_digest(crane.push("team/app", "v2", "moved"))
        crane.delete_tag("team/app", "v3")
        crane.delete_tag("other/svc", "s2")
        expected = {
            ("moved", f"{host}/team/app:new", new),
            ("moved", f"{host}/team/app:v2", moved),
            ("deleted", f"{host}/team/app:v3", None),
            ("deleted", f"{host}/other/svc:s2", None),
        }

        summary, differences = await run_reconcile(settings, host, dry_run=True)
        assert differences == expected
        assert summary["events_published"] == 0
        assert summary["differences"] == {"moved": 2, "deleted": 2}
        assert summary["tags_scanned"] == len(registry_state(crane, repositories))

        summary, differences = await run_reconcile(settings, host)
        assert differences == expected
        assert summary["events_published"] == 4
        await converges(pool, registry_state(crane, repositories))

        summary, differences = await run_reconcile(settings, host)
        assert differences == set()
        assert summary["events_published"] == 0
        assert summary["agreed"] == len(registry_state(crane, repositories))


class Interleaved:
    """Publishes reconcile's events before or after ``newer`` has run."""

    def __init__(self, inner: EventSink, newer: Callable[[], Awaitable[None]], first: bool):
        self._inner, self._newer, self._first = inner, newer, first

    async def publish(self, events: list[dict[str, Any]]) -> None:
        if self._first:
            await self._newer()
        await self._inner.publish(events)
        if not self._first:
            await self._newer()


@pytest.mark.parametrize("push_event_first", [True, False], ids=["push-first", "reconcile-first"])
async def test_a_push_after_the_observation_wins(
    registry_tools: Path,
    make_settings: Callable[..., Settings],
    pool: asyncpg.Pool,
    push_event_first: bool,
) -> None:
    async with NotificationSink() as notifications:
        registry = Registry(endpoints=[notifications.endpoint], users={USER: PASSWORD})
        with registry:
            crane = Crane(registry, USER, PASSWORD)
            host = registry.host
            old = normalize_digest(crane.push("team/app", "v1", "old"))
            settings = reconcile_settings(make_settings, registry)

            async with running_worker(settings) as worker:

                async def newer_push() -> None:
                    # reconcile has observed v1 → old; now the registry moves it, and
                    # its notification goes through as ingest would publish it: the
                    # registry's own id and timestamp
                    pushed = normalize_digest(
                        await asyncio.to_thread(crane.push, "team/app", "v1", "newer")
                    )
                    await eventually(
                        lambda: any(
                            e["target"]["digest"].endswith(pushed)
                            for e in notifications.pushes("team/app", "v1")
                        )
                    )
                    event = next(
                        e
                        for e in notifications.pushes("team/app", "v1")
                        if e["target"]["digest"].endswith(pushed)
                    )
                    await worker.publish(
                        [
                            structured(
                                build_event(
                                    f"{host}/team/app:v1",
                                    pushed,
                                    source=f"urn:ocitag:ingest:distribution:{host}",
                                    event_id=event["id"],
                                    time=format_rfc3339(parse_rfc3339(event["timestamp"])),
                                ),
                                key=f"{host}/team/app:v1".encode(),
                            )
                        ]
                    )
                    newer_digest.append(pushed)

                newer_digest: list[str] = []
                producer = Producer(settings)
                await producer.start()
                try:
                    async with RegistryClient.from_settings(settings) as client:
                        summary = await Reconciler(
                            client,
                            PostgresLiveRecords(pool),
                            Interleaved(
                                KafkaSink(producer, settings.input_topic),
                                newer_push,
                                push_event_first,
                            ),
                            JsonLines(io.StringIO()),
                            concurrency=4,
                        ).run(parse_options(host, ["team/app"], False, None))
                finally:
                    await producer.stop()
                assert summary.differences == {"moved": 1}

                outcomes = await outcomes_of(worker, 2)
                statuses = sorted(o["source"] for o in outcomes)
                assert len(statuses) == 2
                (pushed,) = newer_digest
                assert pushed != old
                await converges(pool, {f"{host}/team/app:v1": pushed})
                rejected = [o for o in outcomes if o["type"] != "ocitag.updated.v1"]
                # the reconcile event was superseded when it came second, applied first
                # otherwise; either way the newer push is what the store holds
                assert len(rejected) == (1 if push_event_first else 0)


async def outcomes_of(worker: Harness, count: int) -> list[dict[str, Any]]:
    return [received.body for received in await worker.outcomes(count)]


async def test_interval_runs_again_and_serves_metrics(
    registry: Registry, make_settings: Callable[..., Settings], pool: asyncpg.Pool
) -> None:
    crane = Crane(registry, USER, PASSWORD)
    crane.push("team/app", "v1")
    port = free_port()
    worker_settings = reconcile_settings(make_settings, registry)
    settings = reconcile_settings(make_settings, registry, http_port=port, http_host="127.0.0.1")
    runs = 'ocitag_reconcile_runs_total{result="ok"}'
    before = REGISTRY.get_sample_value("ocitag_reconcile_runs_total", {"result": "ok"}) or 0.0
    out = io.StringIO()
    async with running_worker(worker_settings):
        stop = asyncio.Event()
        options = parse_options(registry.host, None, False, 0.2)
        task = asyncio.create_task(reconcile(settings, options, JsonLines(out), stop))

        async def ran_twice() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{port}/metrics") as response,
                ):
                    text = await response.text()
            except aiohttp.ClientError:  # not serving yet
                return False
            line = next((s for s in text.splitlines() if s.startswith(runs)), "")
            return bool(line) and float(line.split()[-1]) >= before + 2

        await eventually(ran_twice)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            assert response.status == 200
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
    summaries = [json.loads(s) for s in out.getvalue().splitlines() if '"summary"' in s]
    assert len(summaries) >= 2
    # the first run repaired the store; later ones found it in step
    assert summaries[0]["events_published"] == 1
    assert summaries[-1]["differences"] == {"moved": 0, "deleted": 0}
