"""``GET /ocitags/?watch=true``, admitted: the watch on, the state topic and PostgreSQL
there, some read grant, and room under the per-process and per-caller limits (429
past them); then served as Server-Sent Events (worker/api/watch.py). Its ``HEAD`` is
admitted the same way and answered with the stream's headers, opening no stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from worker import metrics
from worker.api import requests
from worker.api.access import Access
from worker.api.backends import Backends
from worker.api.feed import Feed
from worker.api.problems import ApiProblem, unavailable
from worker.api.store import Reads
from worker.api.watch import HEADERS, Scope, Watch, WatchOptions
from worker.api.watch import serve as serve_watch
from worker.api.watchlimits import WatchLimits
from worker.problems import ProblemKind
from worker.settings import Settings


class Watches:
    def __init__(
        self, settings: Settings, access: Callable[[], Access], backends: Callable[[], Backends]
    ) -> None:
        a = settings.api
        self._on = a.api_max_watches > 0
        self._state_topic = bool(settings.topics.state_topic)
        self._access = access
        self._backends = backends
        self.limits = WatchLimits(a.api_max_watches, a.api_max_watches_per_caller)
        self._options = WatchOptions(
            a.api_watch_queue_events,
            a.api_watch_heartbeat_seconds,
            a.api_watch_snapshot_page,
            a.api_watch_stall_seconds,
            a.api_watch_settle_seconds,
        )

    async def serve(self, request: web.Request, fields: dict[str, Any]) -> web.StreamResponse:
        """``fields``: the request's canonical log line (the caller among them)."""
        repository, feed, reads, access = self._admissible(request, fields)
        caller = fields["caller"]
        self._admit(caller)
        metrics.API_WATCHERS.set(len(self.limits))
        may_read = access.reader(caller)
        options = self._options
        try:
            return await serve_watch(
                request,
                lambda response: Watch(
                    response,
                    feed,
                    reads,
                    options=options,
                    scope=Scope(repository, may_read, access.grants.unrestricted),
                    fields=fields,
                ),
            )
        finally:
            self.limits.release(caller)
            metrics.API_WATCHERS.set(len(self.limits))

    async def head(self, request: web.Request, fields: dict[str, Any]) -> web.StreamResponse:
        """``HEAD`` of a watch: the status and headers its ``GET`` would start with, and
        no stream (no subscription, no slot held: a slot is taken and given back at
        once, so a caller at its limit gets the 429 its ``GET`` would)."""
        self._admissible(request, fields)
        self._admit(fields["caller"])
        self.limits.release(fields["caller"])
        response = web.StreamResponse(status=200, headers=HEADERS)
        response.enable_chunked_encoding()  # as the stream's: no Content-Length either
        await response.prepare(request)
        await response.write_eof()
        return response

    def _admit(self, caller: str) -> None:
        """A slot under the per-process and per-caller limits, else 429."""
        refused = self.limits.admit(caller)
        if refused is not None:
            raise ApiProblem(ProblemKind.TOO_MANY_WATCHES, refused)

    def _admissible(
        self, request: web.Request, fields: dict[str, Any]
    ) -> tuple[str | None, Feed, Reads, Access]:
        """What a watch needs before any limit: a valid query, the watch on, the state
        topic and PostgreSQL there, some read grant (else 403; each tag is filtered by
        the caller's grants)."""
        repository = requests.watch_query(request.query)
        if not self._on:
            raise ApiProblem(
                ProblemKind.TOO_MANY_WATCHES, "the watch is off (OCITAG_API_MAX_WATCHES=0)"
            )
        if not self._state_topic:
            detail = "the watch needs the state topic (OCITAG_STATE_TOPIC is empty)"
            raise ApiProblem(ProblemKind.UNAVAILABLE, detail)
        backends, access = self._backends(), self._access()
        feed, reads = backends.feed, backends.reads
        if feed is None:
            raise unavailable("kafka")
        if reads is None:
            raise unavailable("db")
        access.require_any(fields["caller"], "read", "query.repository", repository or "**")
        return repository, feed, reads, access
