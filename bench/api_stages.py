"""The real api with a timestamp at each stage of every write, for bench-api's
``BENCH_API_STAGES=1`` (where a PUT's time goes inside the api process). Nothing in
``worker/`` is changed; in this process only, a few functions are wrapped to note the
wall clock (``time.time()``, the clock Kafka's CreateTime and the benchmark read):

- ``in``: the request reached the api's middlewares (its headers were parsed);
- ``write``: the handler hands the event to the writer (body read and validated);
- ``acked``: the producer's acknowledgement came back (``publish`` returned);
- ``delivered``: the outcome listener handed the outcome to the waiting request;
- ``resumed``: the request's task ran again with its outcome;
- ``out``: the middlewares are done (the log line written); aiohttp then sends it.

Written as one JSON line per write to ``BENCH_API_STAGES_TO`` when the process exits,
with the write's artifact (bench/api.py joins them with its own and Kafka's times), and
one per collector pause. bench/api.py runs this file by its path from the working
directory of the checkout measured, so that its ``worker`` is the one wrapped (another
checkout's, with ``BENCH_API_BASELINE``):

    BENCH_API_STAGES_TO=stages.jsonl python -c \
        "import runpy; runpy.run_path('<this checkout>/bench/api_stages.py', run_name='__main__')"
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import gc
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

import worker.api.replies
from bench.report import percentile
from worker.api import app as api_app
from worker.api import server, waiters, writes
from worker.cli import main

STAGES_TO = "BENCH_API_STAGES_TO"

_REQUEST: ContextVar[dict[str, Any]] = ContextVar("bench_api_stages")
_written: list[dict[str, Any]] = []
_delivered: dict[str, float] = {}  # event id → when its outcome was handed over


@web.middleware
async def _outer(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    stages: dict[str, Any] = {"in": time.time()}
    _REQUEST.set(stages)
    response = await handler(request)
    stages["out"] = time.time()
    if "write" in stages:
        _written.append(stages)
    return response


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    """Each collection's pause (the event loop stands still meanwhile)."""
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        pause = time.perf_counter() - _gc_started[0]
        _written.append({"gc": info["generation"], "at": time.time(), "ms": pause * 1000})


_gc_started = [0.0]


def patch() -> None:
    """Wrap the api's app, writer, publish, waiters and reply so each notes its stage."""
    app = server.Api.app

    def app_with_stages(self: server.Api) -> web.Application:
        application = app(self)
        application.middlewares.insert(0, _outer)
        return application

    server.Api.app = app_with_stages  # type: ignore[method-assign]

    write = writes.Writer.write

    @functools.wraps(write)
    async def write_with_stages(self: writes.Writer, *args: Any, **kwargs: Any) -> Any:
        stages = _REQUEST.get()
        stages["write"] = time.time()
        stages["artifact"] = str(args[2][0] or "").rsplit(":", 1)[-1]
        reply = await write(self, *args, **kwargs)
        event_id = args[3].get("event_id", "")
        stages["event_id"] = event_id
        if event_id in _delivered:
            stages["delivered"] = _delivered.pop(event_id)
        return reply

    writes.Writer.write = write_with_stages  # type: ignore[method-assign]

    publish = api_app.ApiProcess._publish

    async def publish_with_stages(self: api_app.ApiProcess, messages: Any) -> None:
        await publish(self, messages)
        _REQUEST.get()["acked"] = time.time()

    api_app.ApiProcess._publish = publish_with_stages  # type: ignore[method-assign]

    deliver = waiters.Waiters.deliver

    def deliver_with_stages(self: waiters.Waiters, value: bytes | None) -> bool:
        now = time.time()
        delivered = deliver(self, value)
        if delivered and value:
            outcome = orjson.loads(value)
            _delivered[outcome["causationid"]] = now
        return delivered

    waiters.Waiters.deliver = deliver_with_stages  # type: ignore[method-assign]

    from_outcome = worker.api.replies.from_outcome

    def from_outcome_with_stages(*args: Any, **kwargs: Any) -> Any:
        _REQUEST.get()["resumed"] = time.time()
        return from_outcome(*args, **kwargs)

    worker.api.replies.from_outcome = from_outcome_with_stages
    gc.callbacks.append(_on_gc)


#: (segment, its start, its end): names of ``stages`` or of the benchmark's times
#: (``sent`` and ``read`` by the client; ``created`` and ``answered``: the Kafka
#: timestamps of the event and of its outcome)
SEGMENTS = (
    ("http in: sent → middlewares", "sent", "in"),
    ("handler: → writer (auth, body, validation)", "in", "write"),
    ("writer: → event created (build, pack)", "write", "created"),
    ("produce: event created → acked", "created", "acked"),
    ("worker: event created → outcome created", "created", "answered"),
    ("way back: outcome created → delivered", "answered", "delivered"),
    ("wake-up: max(delivered, acked) → resumed", "ready", "resumed"),
    ("reply: resumed → middlewares done", "resumed", "out"),
    ("http out: middlewares done → read", "out", "read"),
    ("api added (round trip - worker)", "added", "added"),
)


def segments(
    stages: Iterable[dict[str, Any]],
    puts: Iterable[tuple[str, float, float]],
    created: dict[str, int],
    answered: dict[str, int],
) -> dict[str, dict[str, float | int]]:
    """Per segment, p50/p90/p99/max in ms over the PUTs whose every time is known.
    ``puts``: (artifact, round trip in seconds, sent at in Unix seconds)."""
    by_artifact = {
        s["artifact"]: s for s in stages if "artifact" in s and "delivered" in s and "acked" in s
    }
    values: dict[str, list[float]] = {name: [] for name, _, _ in SEGMENTS}
    for artifact, seconds, sent_at in puts:
        stage, event, outcome = by_artifact.get(artifact), created.get(artifact), None
        outcome = answered.get(artifact)
        if stage is None or event is None or outcome is None:
            continue
        times = {k: v * 1000 for k, v in stage.items() if isinstance(v, float)}
        times.update(sent=sent_at * 1000, read=(sent_at + seconds) * 1000)
        times.update(created=float(event), answered=float(outcome))
        times["ready"] = max(times["delivered"], times["acked"])
        for name, start, end in SEGMENTS:
            if name.startswith("api added"):
                values[name].append(seconds * 1000 - (outcome - event))
            else:
                values[name].append(times[end] - times[start])
    found: dict[str, dict[str, float | int]] = {}
    for name, series in values.items():
        series.sort()
        if series:
            found[name] = {
                "puts": len(series),
                **{f"p{q}_ms": round(percentile(series, q), 2) for q in (50, 90, 99)},
                "max_ms": round(series[-1], 2),
            }
    return found


def collections(stages: Iterable[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """The api's collector pauses between ``start`` and ``end`` (Unix seconds), per
    generation: how many, their sum and the longest (ms)."""
    found: dict[str, Any] = {}
    for s in stages:
        if "gc" in s and start <= s["at"] <= end:
            g = found.setdefault(f"gen{s['gc']}", {"count": 0, "sum_ms": 0.0, "max_ms": 0.0})
            g["count"] += 1
            g["sum_ms"] = round(g["sum_ms"] + s["ms"], 2)
            g["max_ms"] = round(max(g["max_ms"], s["ms"]), 2)
    return found


class LoopLag:
    """How late the benchmark's own event loop wakes (a 5 ms sleep, again and again):
    the client's share of a PUT's way in and out."""

    TICK = 0.005

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.TICK)
            self.lags.append(time.perf_counter() - started - self.TICK)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.lags)
        if not ordered:
            return {}
        return {
            **{f"p{q}_ms": round(percentile(ordered, q) * 1000, 2) for q in (50, 99)},
            "max_ms": round(ordered[-1] * 1000, 2),
        }


def dump(path: Path) -> None:
    path.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in _written))


def read(path: Path) -> list[dict[str, Any]]:
    """The stages written by ``dump`` (none if the file is not there)."""
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


if __name__ == "__main__":
    patch()
    atexit.register(dump, Path(os.environ[STAGES_TO]))
    raise SystemExit(main(["api"]))
