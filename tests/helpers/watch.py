"""A watch client for tests: opens ``GET /ocitags/?watch=true`` and collects its
events as they arrive (tests/helpers/sse.py parses them)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from tests.helpers.api import TOKEN, ApiClient
from tests.helpers.sse import Event, Parser, stream_events


@dataclass
class Watcher:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    parser: Parser = field(default_factory=Parser)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    body: bytes = b""

    async def until(
        self, done: Callable[[list[Event]], bool], timeout: float = 20.0
    ) -> list[Event]:
        async with asyncio.timeout(timeout):
            while not done(self.events):
                if self.ended.is_set():
                    raise AssertionError(f"the watch ended: {self.status} {self.body[:300]!r}")
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), 0.2)
        return self.events

    async def synced(self, timeout: float = 20.0) -> list[Event]:
        return await self.until(lambda e: any(x.name == "synced" for x in e), timeout)

    @property
    def last_id(self) -> str | None:
        return self.events[-1].id if self.events else None

    def changes(self) -> list[Event]:
        """The events after the last ``synced`` (or all, for a resumed watch)."""
        names = [e.name for e in self.events]
        start = len(names) - names[::-1].index("synced") if "synced" in names else 0
        return self.events[start:]


def watch_url(api: ApiClient, repository: str | None = None) -> str:
    query = f"&repository={quote(repository, safe='')}" if repository else ""
    return f"{api.base}/ocitags/?watch=true{query}"


@contextlib.asynccontextmanager
async def watching(
    api: ApiClient,
    repository: str | None = None,
    *,
    last_event_id: str | None = None,
    token: str = TOKEN,
) -> AsyncIterator[Watcher]:
    """A watch read in the background until the block ends (then disconnected)."""
    watcher = Watcher()
    headers: dict[str, Any] = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)

    async def read() -> None:
        try:
            async with api.session.get(
                watch_url(api, repository), headers=headers, timeout=timeout
            ) as response:
                watcher.status = response.status
                watcher.headers = dict(response.headers)
                if response.status != 200:
                    watcher.body = await response.read()
                    return
                async for event in stream_events(response.content, watcher.parser):
                    watcher.events.append(event)
                    watcher.arrived.set()
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            watcher.ended.set()
            watcher.arrived.set()

    task = asyncio.create_task(read())
    try:
        yield watcher
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
