"""A receiver for the real registry's notifications, standing in for ingest where a test
needs the registry's own event (its id and timestamp) but not the ingest service."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.helpers.registry import Endpoint, free_port


@dataclass
class NotificationSink:
    """Collects every event of every delivery posted to ``/events``."""

    port: int = field(default_factory=free_port)
    events: list[dict[str, Any]] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(url=f"http://127.0.0.1:{self.port}/events", backoff="100ms")

    async def __aenter__(self) -> NotificationSink:
        async def receive(request: web.Request) -> web.Response:
            # the registry's media type is application/vnd.docker.distribution.events.v2+json
            body = json.loads(await request.read())
            self.events.extend(body.get("events", []))
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/events", receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def pushes(self, repository: str, tag: str) -> list[dict[str, Any]]:
        """The registry's push events of ``repository:tag`` (a path, no host)."""
        return [
            e
            for e in self.events
            if e.get("action") == "push"
            and e.get("target", {}).get("repository") == repository
            and e.get("target", {}).get("tag") == tag
        ]
