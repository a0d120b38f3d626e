"""The real worker with extra keyword arguments for its Kafka consumer: a what-if
experiment for the benchmarks (``BENCH_CONSUMER_OVERRIDES='{"fetch_max_wait_ms": 10}'``),
to measure a tuning before the worker has a setting for it. Nothing in ``worker/`` is
changed; in this process only, the consumer's constructor gets the overrides in place of
what the worker passes (the worker passes most options explicitly, so defaults would not
do).

    BENCH_CONSUMER_OVERRIDES='{"fetch_max_wait_ms": 10}' python -m bench.patched_worker

``BENCH_HISTORY_OFF=1``: the worker writes no history entries (bench/tag_history.py
measures what they cost against it); everything else, the statement included, is the
worker's own.

``BENCH_CALLS_TO=<path>``: the worker runs under cProfile, written to ``path`` (pstats)
when it exits; read for call counts per batch (``bench.profile.calls``), not for time
(the profiler slows every call).
"""

from __future__ import annotations

import atexit
import cProfile
import json
import os
from typing import Any

import aiokafka

import worker.store
from worker.cli import main
from worker.history import StoredColumns, stored_columns

ENV = "BENCH_CONSUMER_OVERRIDES"
HISTORY_OFF = "BENCH_HISTORY_OFF"
CALLS_TO = "BENCH_CALLS_TO"


def patch_consumer(overrides: dict[str, Any]) -> None:
    """Every AIOKafkaConsumer built from now on gets ``overrides``, winning over the
    keyword arguments of its caller."""
    original = aiokafka.AIOKafkaConsumer.__init__

    def init(self: aiokafka.AIOKafkaConsumer, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **{**kwargs, **overrides})

    aiokafka.AIOKafkaConsumer.__init__ = init


def patch_history_off() -> None:
    """No history entries: the store's statement runs with none to insert."""

    def none(*_: Any, **__: Any) -> StoredColumns:
        return stored_columns(())

    worker.store.history_columns = none


def count_calls(path: str) -> None:
    """cProfile from now until the process exits; its stats to ``path``."""
    profiler = cProfile.Profile()
    profiler.enable()

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(path)

    atexit.register(dump)


if __name__ == "__main__":
    if os.environ.get(CALLS_TO):
        count_calls(os.environ[CALLS_TO])
    patch_consumer(json.loads(os.environ.get(ENV) or "{}"))
    if os.environ.get(HISTORY_OFF) == "1":
        patch_history_off()
    raise SystemExit(main(["run"]))
