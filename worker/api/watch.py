"""One watch (``GET /ocitags/?watch=true``) from request to end (docs/subscribers.md
"Watch"): subscribe to the feed first, then replay from the ``Last-Event-ID`` or send a
snapshot from PostgreSQL, then ``synced``, then the live changes; ``reset`` and a fresh
snapshot when the topic can no longer replay what the client missed. The decisions are
``watchrules``' (pure); this module holds the flow and the writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import web

from worker import metrics
from worker.api import sse
from worker.api.feed import WRITE_BYTES, Feed, Subscription
from worker.api.store import Reads, Stored
from worker.api.watchrules import Batch, Change, Cursor, Gap, Start, start
from worker.waits import wait_at_most

log = structlog.get_logger("worker.api.watch")
HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx and the like: pass each event on at once
}
#: catch-up reads from the topic before a watcher must be live. Each reads what arrived
#: during the one before, so for a watcher faster than the changes they shrink and one
#: or two suffice; a watcher that needs more is slower than the changes (it would hold
#: one of the process's few replay consumers for ever): ``too_slow``.
CATCH_UP_ROUNDS = 10
_EVENTS = {
    name: metrics.API_WATCH_EVENTS.labels(name) for name in ("upsert", "delete", "synced", "reset")
}


class Writer(Protocol):
    """Where a watch writes (aiohttp's StreamResponse)."""

    async def write(self, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class WatchOptions:
    queue_events: int
    heartbeat_seconds: float
    snapshot_page: int
    stall_seconds: float = 30.0
    settle_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class Scope:
    """What a watcher sees: one repository (None: all) and the tags it may read."""

    repository: str | None
    may_read: Callable[[str], bool]
    #: ``may_read`` allows every tag (no grants configured): the fan-out's fast path
    reads_all: bool = False


def snapshot_data(stored: Stored) -> bytes:
    """A snapshot row as the state topic's value: the OCITag JSON plus ``version``."""
    return orjson.dumps({**stored.record, "version": stored.version})


class Watch:
    """One watcher's stream. ``fields``: the request's canonical log line (the counts
    and the reason it ended go there).

    Two tasks write: the flow (snapshot or replay, catch-up, live) and the heartbeat,
    which writes a comment whenever nothing was written for a heartbeat, in every phase
    (a long snapshot, a replay waiting for its turn). Each write is whole frames, so
    they never interleave inside an event. A write the client does not take within
    ``stall_seconds`` ends the watch as ``too_slow``."""

    def __init__(
        self,
        response: Writer,
        feed: Feed,
        reads: Reads,
        *,
        options: WatchOptions,
        scope: Scope,
        fields: dict[str, Any],
    ) -> None:
        self._out = Output(response, options, fields)
        self._feed = feed
        self._reads = reads
        self._options = options
        self._repository = scope.repository
        self._may_read = scope.may_read
        self._reads_all = scope.reads_all
        self._fields = fields
        #: set when the feed cuts this watcher off (the stream may be stuck in a write)
        self.cut = asyncio.Event()
        self.subscription: Subscription = self._subscribe()

    def _subscribe(self) -> Subscription:
        subscription = self._feed.subscribe(self._options.queue_events)
        subscription.on_cut = self.cut.set
        return subscription

    def cursor(self, positions: Sequence[int]) -> Cursor:
        return Cursor(
            list(positions),
            self._feed.ids,
            self._repository,
            self._may_read,
            reads_all=self._reads_all,
        )

    async def run(self, last_event_id: str | None) -> None:
        """Until the client goes (ConnectionResetError), a write stalls or the feed cuts
        it off (Cut); the heartbeat's failure ends it as the flow's would."""
        flow = asyncio.create_task(self._flow(last_event_id))
        beats = asyncio.create_task(self._out.beats())
        try:
            done, _ = await asyncio.wait({flow, beats}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (flow, beats):
                task.cancel()
            await asyncio.gather(flow, beats, return_exceptions=True)

    async def _flow(self, last_event_id: str | None) -> None:
        cursor: Cursor | None = None
        reset_reason = ""
        if last_event_id is not None:
            first, end = await self._feed.offsets()
            plan = start(last_event_id, first, end, self._feed.ids)
            reset_reason = plan.reason
            if plan.start is Start.REPLAY:
                try:
                    cursor = await self._resume(plan.positions)
                except Gap as gap:
                    reset_reason = gap.reason
                    self._renew()
        while True:
            try:
                if cursor is None:
                    if reset_reason:
                        self._fields["reset"] = reset_reason
                        await self._out.send(
                            sse.event("reset", b"{}", self._snapshot_id()), "reset"
                        )
                    cursor = await self._snapshot()  # its catch-up may meet a Gap too
                await self._live(cursor)
            except Gap as gap:
                reset_reason, cursor = gap.reason, None
                self._renew()

    def _snapshot_id(self) -> str:
        return self._feed.ids.encode(self.subscription.start, snapshot=True)

    def _renew(self) -> None:
        """A new subscription at the feed's position (the old one's queue is of no use:
        after a gap, or after it overflowed while this watcher caught up)."""
        self._feed.unsubscribe(self.subscription)
        self.subscription = self._subscribe()

    async def _resume(self, positions: tuple[int, ...]) -> Cursor:
        """Every change from ``positions`` on, from the topic, then live."""
        cursor = self.cursor(positions)
        await self._replay(cursor)
        await self._catch_up(cursor)
        self._fields["resumed"] = True
        cursor.live = True
        return cursor

    async def _replay(self, cursor: Cursor) -> None:
        """The topic from the cursor to where the subscription began."""
        until = self.subscription.start
        positions = tuple(cursor.positions)
        # closed at once on a cut, a gap or a cancel: the replay slot and its consumer go
        # back now, not when the generator is collected
        async with contextlib.aclosing(self._feed.replay(positions, until)) as batches:
            async for batch in batches:
                await self._out.pass_on(cursor, batch)
        cursor.end_of_replay([max(u, p) for u, p in zip(until, positions, strict=False)])
        self._fields["replays"] = self._fields.get("replays", 0) + 1

    async def _catch_up(self, cursor: Cursor) -> None:
        """Send what the subscription queued while the snapshot or the replay was
        written; if its queue overflowed meanwhile, read the missed span from the topic
        with a new subscription (again, until a pass leaves it within its limit). Then
        the outbox goes live: from there on an overflow is ``too_slow``."""
        rounds = 0
        while True:
            outbox = self.subscription.outbox
            if outbox.overflowed:
                if rounds == CATCH_UP_ROUNDS:
                    raise Cut("too_slow")
                rounds += 1
                self._fields["catch_ups"] = self._fields.get("catch_ups", 0) + 1
                metrics.API_WATCH_CATCH_UPS.inc()
                self._renew()
                await self._replay(cursor)
                continue
            batches = outbox.take()
            self._check_cut()
            if not batches and outbox.go_live():
                return
            for batch in batches:
                await self._out.pass_on(cursor, batch)

    async def _snapshot(self) -> Cursor:
        """Every live record in scope, then the changes queued meanwhile, then
        ``synced``: its id stands past everything the client then holds."""
        cursor = self.cursor(self.subscription.start)
        snapshot_id = self._snapshot_id()
        after = ("", "")
        rows = 0
        while True:
            page = await self._reads.snapshot(self._repository, after, self._options.snapshot_page)
            frames = []
            for stored in page:
                key = f"{stored.record['repository']}:{stored.record['tag']}"
                if self._may_read(key):
                    cursor.snapshot_row(key, stored.version)
                    frames.append(sse.event("upsert", snapshot_data(stored), snapshot_id))
            if frames:
                await self._out.write(b"".join(frames))
                self._out.count("upsert", len(frames))
                rows += len(frames)
            if len(page) < self._options.snapshot_page:
                break
            after = (page[-1].record["repository"], page[-1].record["tag"])
        self._fields["snapshot_records"] = rows
        await self._catch_up(cursor)
        cursor.live = True
        await self._out.send(sse.event("synced", b"{}", cursor.event_id()), "synced")
        return cursor

    async def _live(self, cursor: Cursor) -> None:
        wake = self.subscription.wake
        settle_at = time.monotonic() + self._options.settle_seconds
        while True:
            self._check_cut()
            if not self.subscription.outbox.queued:
                wake.clear()
                wait = settle_at - time.monotonic() if cursor.sent else None
                await wait_at_most(wake, wait)
            for batch in self.subscription.outbox.take():
                await self._out.pass_on(cursor, batch)
            if cursor.sent and time.monotonic() >= settle_at:
                self._fields["settled_versions"] = cursor.settle()

    def _check_cut(self) -> None:
        closed = self.subscription.outbox.closed
        if closed is not None:
            raise Cut(closed)

    def finish(self, reason: str) -> None:
        """Leave the feed; the counts and the reason go to the log line and metrics."""
        self._feed.unsubscribe(self.subscription)
        self._out.finish(reason)


class Output:
    """What one watch writes, and how: whole frames, pieces of at most ``WRITE_BYTES``,
    each write bounded by ``stall_seconds`` (past it: ``Cut("too_slow")``), a heartbeat
    comment whenever nothing was written for a heartbeat, and the counts of the events
    (for the log line and the metrics)."""

    def __init__(self, response: Writer, options: WatchOptions, fields: dict[str, Any]) -> None:
        self._response = response
        self._options = options
        self._fields = fields
        self._last_write = time.monotonic()
        self._writing = 0
        self._counts = {"upsert": 0, "delete": 0}

    async def beats(self) -> None:
        """A comment line whenever nothing was written for a heartbeat (not while a
        write waits for the client: that one is bounded by ``stall_seconds``)."""
        heartbeat = self._options.heartbeat_seconds
        while True:
            due = self._last_write + heartbeat - time.monotonic()
            if due > 0 or self._writing:
                await asyncio.sleep(due if due > 0 else heartbeat)
            else:
                await self.write(sse.comment("heartbeat"))

    async def pass_on(self, cursor: Cursor, batch: Sequence[Change]) -> None:
        """The batch's events in scope, written in pieces of at most ``WRITE_BYTES``: a
        write waits for the socket to take it, so what one watcher holds in memory
        beyond its queue is one piece. A watcher that takes the whole read writes the
        pieces joined once for all such watchers."""
        if cursor.takes_whole(batch):
            assert isinstance(batch, Batch)
            shared = batch.shared()
            cursor.positions = list(batch[-1].after)
            self.count("upsert", shared.upserts)
            self.count("delete", shared.deletes)
            for piece in shared.pieces:
                await self.write(piece)
            return
        frames: list[bytes] = []
        size = 0
        for c in batch:
            if cursor.admit(c):
                aligned = c.frame and cursor.aligned(c.after)
                frame = c.frame if aligned else c.framed(cursor.event_id())
                frames.append(frame)
                size += len(frame)
                self._counts[c.name] += 1
                if size >= WRITE_BYTES:
                    await self.write(b"".join(frames))
                    frames, size = [], 0
        if frames:
            await self.write(b"".join(frames))

    def count(self, name: str, n: int) -> None:
        self._counts[name] += n

    async def send(self, frame: bytes, name: str) -> None:
        await self.write(frame)
        _EVENTS[name].inc()

    async def write(self, data: bytes) -> None:
        self._writing += 1
        try:
            async with asyncio.timeout(self._options.stall_seconds):
                await self._response.write(data)
        except TimeoutError:
            self._fields["stalled"] = True
            raise Cut("too_slow") from None
        finally:
            self._writing -= 1
            self._last_write = time.monotonic()

    def finish(self, reason: str) -> None:
        for name, n in self._counts.items():
            if n:
                _EVENTS[name].inc(n)
        self._fields.update(
            events_upsert=self._counts["upsert"],
            events_delete=self._counts["delete"],
            ended=reason,
        )
        metrics.API_WATCH_DISCONNECTS.labels(reason).inc()


class Cut(Exception):  # noqa: N818 - the feed's decision, not a failure
    """The feed closed this watcher's outbox (``reason``: too_slow, shutdown)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def serve(
    request: web.Request, watch_of: Callable[[web.StreamResponse], Watch]
) -> web.StreamResponse:
    """Stream one watch until the client goes, the feed cuts it off or the process
    stops; the reason goes to the request's log line and ``ocitag_api_watch_disconnects``.
    A watcher cut off while stuck in a write (it stopped reading) is aborted: its
    connection closes without waiting for the client."""
    response = web.StreamResponse(status=200, headers=HEADERS)
    response.enable_chunked_encoding()
    await response.prepare(request)
    watch = watch_of(response)
    streaming = asyncio.create_task(watch.run(request.headers.get("Last-Event-ID")))
    cut = asyncio.create_task(watch.cut.wait())
    reason = "error"
    try:
        await asyncio.wait({streaming, cut}, return_when=asyncio.FIRST_COMPLETED)
        if not streaming.done():
            streaming.cancel()
            await asyncio.gather(streaming, return_exceptions=True)
            reason = watch.subscription.outbox.closed or "too_slow"
            if request.transport is not None:
                request.transport.abort()
        else:
            reason = _ended(streaming.exception())
            if reason == "too_slow" and request.transport is not None:
                request.transport.abort()  # a write stalled: the client stopped reading
    finally:
        cut.cancel()
        if not streaming.done():
            streaming.cancel()
        watch.finish(reason)
    return response


def _ended(exc: BaseException | None) -> str:
    if isinstance(exc, Cut):
        return exc.reason
    if isinstance(exc, ConnectionError):
        return "client_closed"
    if exc is not None:
        log.error("watch_failed", error=repr(exc)[:300])
    return "error"
