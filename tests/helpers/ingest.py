"""Ingest fixtures: ``tests/fixtures/ingest/<kind>/<name>.json`` holds either the body
itself, or ``{"headers": {...}, "body": ...}`` when the headers matter (CloudEvents
binary mode). Bodies are re-serialised compactly, as senders post them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.registry import free_port
from worker.ingest.app import run_ingest
from worker.settings import Settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"


def fixture_names(kind: str) -> list[str]:
    return sorted(p.stem for p in (FIXTURES / kind).glob("*.json"))


def load_delivery(kind: str, name: str) -> tuple[bytes, dict[str, str]]:
    """(body, headers with lower-case names) of a fixture."""
    raw: Any = json.loads((FIXTURES / kind / f"{name}.json").read_text(encoding="utf-8"))
    if isinstance(raw, dict) and set(raw) == {"headers", "body"}:
        headers = {k.lower(): v for k, v in raw["headers"].items()}
        return json.dumps(raw["body"]).encode(), headers
    return json.dumps(raw).encode(), {"content-type": "application/json"}


@contextlib.asynccontextmanager
async def running_ingest(settings: Settings, *, kafka: bool = True) -> AsyncIterator[str]:
    """``ocitag-worker ingest``'s own run, in this event loop, on
    ``settings.ingest_port``; yields its base URL once it serves (and, with ``kafka``,
    once its /readyz says Kafka is connected), stopped (drained) on exit."""
    if not settings.probes.http_port:  # the probes say when Kafka is connected
        settings = settings.updated(update={"http_port": free_port(), "http_host": "127.0.0.1"})
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingest(settings, stop, handle_signals=False))
    url = f"http://127.0.0.1:{settings.ingest.ingest_port}"
    ready = f"http://127.0.0.1:{settings.probes.http_port}/readyz"
    try:
        async with asyncio.timeout(30), aiohttp.ClientSession() as http:
            while True:
                if task.done():
                    task.result()  # start-up failed: raise it here
                if await _serving(http, url, ready, kafka):
                    break
                await asyncio.sleep(0.05)
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=settings.lifecycle.shutdown_grace_seconds + 10)


async def _serving(http: aiohttp.ClientSession, url: str, ready: str, kafka: bool) -> bool:
    try:
        async with http.get(ready) as probe:
            reason = str((await probe.json()).get("reason"))
        async with http.get(f"{url}/webhooks/-") as route:  # 405: the webhook port serves
            serving = route.status == 405
    except aiohttp.ClientError:
        return False
    return serving and (not kafka or "kafka connected" in reason)
