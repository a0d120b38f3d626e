"""Named receivers on real software: two CNCF Distribution registries, ``prod`` and
``dev``, each with its own receiver and hosts. The dev registry's real notification,
sent on naming the prod registry's host (``?registry=``), is refused whole (403
host-not-allowed, each entry named) and publishes nothing; sent as it came (its own
host) it is accepted; the prod registry's own push arrives as an outcome."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.helpers.harness import records_on, running_worker
from tests.helpers.images import Crane
from tests.helpers.ingest import running_ingest
from tests.helpers.registry import Endpoint, Registry, free_port
from tests.helpers.wait import eventually
from worker.settings import Settings

pytestmark = pytest.mark.integration

PROD_SECRET = "Bearer prod-receiver-0123456789"
DEV_SECRET = "Bearer dev-receiver-0123456789"


class Capture:
    """A notifications endpoint that keeps what the registry sends (and answers 200)."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[bytes, dict[str, str]]] = []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        self.deliveries.append((await request.read(), dict(request.headers)))
        return web.Response(status=200)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"


@contextlib.asynccontextmanager
async def capturing() -> AsyncIterator[Capture]:
    capture = Capture()
    app = web.Application()
    app.router.add_post("/events", capture.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", capture.port).start()
    try:
        yield capture
    finally:
        await runner.cleanup()


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status, json.loads(await r.read())


async def test_each_registry_speaks_only_for_its_own_host(
    make_settings: Callable[..., Settings], registry_tools: Path
) -> None:
    ingest_port = free_port()
    base = f"http://127.0.0.1:{ingest_port}/webhooks"
    async with capturing() as capture:
        dev_endpoint = Endpoint(capture.url, headers={"Authorization": DEV_SECRET})
        with Registry(endpoints=[dev_endpoint]) as dev:
            prod = Registry(
                endpoints=[Endpoint(f"{base}/prod", headers={"Authorization": PROD_SECRET})]
            )
            receivers = [
                {"name": "prod", "kind": "distribution", "secret": PROD_SECRET,
                 "hosts": [prod.host]},
                {"name": "dev", "kind": "distribution", "secret": DEV_SECRET,
                 "hosts": [dev.host]},
            ]  # fmt: skip
            settings = make_settings(
                ingest_port=ingest_port,
                ingest_host="127.0.0.1",
                ingest_receivers=json.dumps(receivers),
                ingest_deadline_seconds=2.0,
            )
            topic = settings.topics.input_topic
            async with running_worker(settings) as worker, running_ingest(settings):
                # the dev registry's own push, as it sent it
                await asyncio.to_thread(Crane(dev).push, "team/app", "v1")
                await eventually(lambda: any(b"team/app" in d[0] for d in capture.deliveries))
                body, sent = next(d for d in capture.deliveries if b'"tag"' in d[0])
                headers = {"Authorization": sent["Authorization"],
                           "Content-Type": sent["Content-Type"]}  # fmt: skip

                before = await records_on(settings, topic)
                status, problem = await post(f"{base}/dev?registry={prod.host}", body, headers)
                assert status == 403, problem
                assert problem["type"].endswith("/host-not-allowed")
                entries = json.loads(body)["events"]
                named = [f"entries[{i}].repository" for i, e in enumerate(entries)
                         if e["action"] == "push" and e["target"].get("tag")]  # fmt: skip
                assert named and [e["location"] for e in problem["errors"]] == named
                assert await records_on(settings, topic) == before  # nothing published

                status, accepted = await post(f"{base}/dev", body, headers)  # its own host
                assert status == 200 and accepted["published"], accepted

                with prod:  # the prod registry's own push reaches the record
                    await asyncio.to_thread(Crane(prod).push, "team/app", "v1")
                    outcomes = await worker.outcomes(2, timeout=60)
    subjects = {o.body["subject"] for o in outcomes}
    assert subjects == {f"{dev.host}/team/app:v1", f"{prod.host}/team/app:v1"}


async def test_an_unknown_name_and_a_wrong_secret_take_alike(
    make_settings: Callable[..., Settings],
) -> None:
    """A lenient statistical check on the real server (the exact one, the same number
    of comparisons of the same length, is tests/unit/ingest/test_receivers.py): over
    interleaved rounds, the median times of an unknown receiver, a wrong secret and
    another receiver's right secret differ by less than the noise of a shared machine."""
    receivers = [
        {"name": "prod", "kind": "distribution", "secret": PROD_SECRET, "hosts": ["a.example"]},
        {"name": "dev", "kind": "distribution", "secret": DEV_SECRET, "hosts": ["b.example"]},
    ]
    settings = make_settings(
        ingest_port=free_port(), ingest_host="127.0.0.1", ingest_receivers=json.dumps(receivers)
    )
    cases = {
        "unknown": ("/webhooks/nope", PROD_SECRET),
        "wrong": ("/webhooks/prod", "Bearer wrong-secret-012345678"),
        "other": ("/webhooks/prod", DEV_SECRET),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    answers: set[tuple[int, bytes]] = set()
    async with running_ingest(settings, kafka=False) as url, aiohttp.ClientSession() as http:
        for _ in range(150):
            for name, (path, secret) in cases.items():
                started = time.perf_counter()
                async with http.post(
                    url + path, data=b'{"events": []}', headers={"Authorization": secret}
                ) as response:
                    answers.add((response.status, await response.read()))
                times[name].append(time.perf_counter() - started)
    assert answers == {(401, b'{"title":"Unauthorized","status":401}')}
    medians = {name: statistics.median(values) for name, values in times.items()}
    low, high = min(medians.values()), max(medians.values())
    assert high - low < max(0.5 * low, 0.001), medians
