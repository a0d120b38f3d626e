"""The Python runtime under the worker: the event loop (uvloop unless the settings ask
for the standard one), garbage-collector pauses measured, and the collector tuned once
start-up is done.

A collection stops the event loop: every batch in flight waits for it. A full
(generation 2) collection walks every tracked object, and a worker holds a few hundred
thousand of them from start-up (modules, pydantic schemas, prometheus registries) that
never become garbage: ``gc.freeze()`` moves those out of the collector's sight, so a full
collection walks only what batches made since. The young-generation threshold goes from
700 allocations to ``YOUNG_THRESHOLD``: a batch of a few thousand events allocates
hundreds of thousands of objects, almost all freed by reference counting; collecting the
young generation every 700 of them costs CPU for no memory. The count that triggers a
young collection is tracked objects made minus freed, so in a worker's drain it grows
with the batches in flight (six of ~1,000 events, each holding its records, events,
decisions and outcomes until published): at 50,000 every young collection walked ~50,000
live objects that were about to be freed, 31 collections of 90 ms (busy machine) in a
200,000-event drain, ~17 µs per event of pauses. At ``WORKER_YOUNG_THRESHOLD`` (200,000)
there were 3 (3 µs per event) and the worker's CPU per event 0.97x, for 28 MiB more peak
memory; at 500,000 none at all (0.90x, 50 MiB more), but the rare collection would then
be one of half a million objects: a pause of a few hundred milliseconds, against the
latency goal (docs/scaling.md). The api holds no batches: it keeps ``YOUNG_THRESHOLD``,
measured for its p99.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from worker import metrics
from worker.settings import EventLoop

YOUNG_THRESHOLD = 50_000
#: the worker's (``run``): its drains hold thousands of events in flight
WORKER_YOUNG_THRESHOLD = 200_000

_started: list[float] = [0.0]
_pauses = {g: metrics.GC_PAUSE_SECONDS.labels(str(g)) for g in range(3)}


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _pauses[info["generation"]].observe(time.perf_counter() - _started[0])


def watch_gc() -> None:
    """Record every collection's pause in ``ocitag_gc_pause_seconds`` (idempotent)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def tune_gc(young: int = YOUNG_THRESHOLD) -> None:
    """Once start-up is done: freeze what exists, collect the young generation every
    ``young`` allocations (net of those freed)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)


def loop_factory(kind: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """For ``asyncio.Runner``: uvloop's (libuv: less CPU per socket read and callback)
    or None, the standard loop."""
    if kind == "uvloop":
        import uvloop  # noqa: PLC0415 - imported only when chosen

        return uvloop.new_event_loop
    return None
