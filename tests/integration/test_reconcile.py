"""Reconcile end to end: the real CNCF Distribution registry with htpasswd auth, images
pushed, moved and deleted by the real crane while no notification reaches the store
(ingest not wired), the running worker applying what reconcile publishes; and reconcile
racing a push that goes through the real ingest."""

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

from tests.helpers.harness import running_worker
from tests.helpers.images import Crane
from tests.helpers.ingest import running_ingest
from tests.helpers.metrics import expected_families, scrape_families
from tests.helpers.registry import Endpoint, Registry, free_port
from tests.helpers.wait import eventually
from worker import metrics
from worker.identifiers import normalize_digest
from worker.oci import RegistryClient
from worker.reconcile.output import JsonLines
from worker.reconcile.run import EventPublisher, Reconciler, parse_options, reconcile
from worker.reconcile.store import PostgresLiveRecords
from worker.settings import Settings
from worker.startup import InputSink

pytestmark = pytest.mark.integration

USER, PASSWORD = "alice", "pa:ss,word"
ENCODED = "pa%3Ass%2Cword"
INGEST_TOKEN = "Bearer ingest-t0ken"


@pytest.fixture
def registry(registry_tools: Path) -> Iterator[Registry]:
    with Registry(users={USER: PASSWORD}) as registry:
        yield registry


def reconcile_settings(
    make_settings: Callable[..., Settings], registry: Registry, **overrides: Any
) -> Settings:
    return make_settings(
        registry_endpoints=f"{registry.host}=http://{USER}:{ENCODED}@{registry.host}",
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

    def __init__(self, inner: EventPublisher, newer: Callable[[], Awaitable[None]], first: bool):
        self._inner, self._newer, self._first = inner, newer, first

    async def publish(self, events: list[dict[str, Any]]) -> None:
        if self._first:
            await self._newer()
        await self._inner.publish(events)
        if not self._first:
            await self._newer()


def wire_to_ingest(registry: Registry, settings: Settings) -> None:
    """Restart ``registry`` (same storage, same port) notifying the real ingest: what it
    held before was never delivered, so the store is behind it."""
    registry.stop()
    url = f"http://127.0.0.1:{settings.ingest.ingest_port}/webhooks/distribution"
    # a generous timeout: ingest answers within its deadline, so the registry never
    # re-sends (a re-send would only add the worker's byte-identical replay)
    endpoint = Endpoint(
        url, headers={"Authorization": INGEST_TOKEN}, timeout="10s", backoff="100ms"
    )
    registry.endpoints = [endpoint]
    registry.start()


@pytest.mark.parametrize("push_event_first", [True, False], ids=["push-first", "reconcile-first"])
async def test_a_push_through_ingest_after_the_observation_wins(
    registry: Registry,
    make_settings: Callable[..., Settings],
    pool: asyncpg.Pool,
    push_event_first: bool,
) -> None:
    """Reconcile observes v1 → old while the store is behind; then v1 is pushed again and
    the registry's notification goes through ``ocitag-worker ingest`` to Kafka. Whichever
    of the two events reaches the worker first, the store ends at the registry's state."""
    crane = Crane(registry, USER, PASSWORD)
    host = registry.host
    old = normalize_digest(crane.push("team/app", "v1", "old"))
    settings = reconcile_settings(
        make_settings,
        registry,
        ingest_port=free_port(),
        ingest_host="127.0.0.1",
        ingest_distribution_secret=INGEST_TOKEN,
        ingest_deadline_seconds=2.0,  # a loaded 2-core test machine
    )
    wire_to_ingest(registry, settings)
    newer: list[str] = []

    async with running_worker(settings) as worker, running_ingest(settings):

        async def push_newer() -> None:
            # reconcile has observed v1 → old (its event is built, maybe published)
            # no label: one manifest PUT, so one tag event (old carries a label: another image)
            pushed = await asyncio.to_thread(crane.push, "team/app", "v1")
            newer.append(normalize_digest(pushed))
            if push_event_first:  # ingest's event is applied before reconcile's is sent
                (outcome,) = await worker.outcomes(1, timeout=60)
                assert outcome.body["data"]["artifact"] == newer[0]

        sink = InputSink(settings, "reconcile")
        await sink.start()
        try:
            async with RegistryClient.from_settings(settings) as client:
                summary = await Reconciler(
                    client,
                    PostgresLiveRecords(pool),
                    Interleaved(sink, push_newer, push_event_first),
                    JsonLines(io.StringIO()),
                    concurrency=4,
                ).run(parse_options(host, ["team/app"], False, None))
        finally:
            await sink.stop()
        assert summary.differences == {"moved": 1}

        outcomes = await worker.outcomes(2, timeout=60)
        (pushed,) = newer
        assert pushed != old
        assert registry_state(crane, ["team/app"]) == {f"{host}/team/app:v1": pushed}
        await converges(pool, registry_state(crane, ["team/app"]))
    seen = [
        (o.body["type"], o.body["data"].get("artifact", o.body["data"].get("status")))
        for o in sorted(outcomes, key=lambda o: (o.partition, o.offset))
    ]
    if push_event_first:  # reconcile's older observation is superseded
        assert seen == [("ocitag.updated.v1", pushed), ("ocitag.rejected.v1", 409)]
    else:  # reconcile's repair applied, then the push moves the tag on
        assert seen == [("ocitag.updated.v1", old), ("ocitag.updated.v1", pushed)]


async def test_interval_runs_again_and_serves_metrics(
    registry: Registry, make_settings: Callable[..., Settings], pool: asyncpg.Pool
) -> None:
    crane = Crane(registry, USER, PASSWORD)
    crane.push("team/app", "v1")
    port = free_port()
    worker_settings = reconcile_settings(make_settings, registry)
    settings = reconcile_settings(make_settings, registry, http_port=port, http_host="127.0.0.1")
    runs = 'ocitag_reconcile_runs_total{result="ok"}'
    before = metrics.RECONCILE_RUNS.labels("ok")._value.get()
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

        def found_in_step() -> bool:
            # the worker applies the first run's repair in its own time (slow on a busy
            # machine): a run after that finds nothing to repair
            done = [json.loads(s) for s in out.getvalue().splitlines() if '"summary"' in s]
            return len(done) >= 2 and done[-1]["differences"] == {"moved": 0, "deleted": 0}

        await eventually(ran_twice)
        await eventually(found_in_step, timeout=60)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            assert response.status == 200
        shown = await scrape_families(port)
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
    summaries = [json.loads(s) for s in out.getvalue().splitlines() if '"summary"' in s]
    assert len(summaries) >= 2
    # the first run repaired the store; later ones found it in step
    assert summaries[0]["events_published"] == 1
    assert summaries[-1]["differences"] == {"moved": 0, "deleted": 0}
    # reconcile's own metrics and the shared ones it moves: no worker or ingest ones at 0
    assert {name for name in shown if name.startswith("ocitag_")} == expected_families("reconcile")
