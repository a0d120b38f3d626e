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
async def running_ingest(settings: Settings) -> AsyncIterator[str]:
    """``ocitag-worker ingest``'s own run, in this event loop, on
    ``settings.ingest_port``; yields its base URL, stopped (drained) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingest(settings, stop, handle_signals=False))
    url = f"http://127.0.0.1:{settings.ingest_port}"
    try:
        async with asyncio.timeout(20):
            while True:
                if task.done():
                    task.result()  # start-up failed: raise it here
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", settings.ingest_port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=settings.shutdown_grace_seconds + 10)
