"""worker/runtime.py: the collector tuned with the young-generation threshold asked for
(the worker's larger one, the api's default)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from worker import runtime


@pytest.fixture
def collector_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector_restored")
@pytest.mark.parametrize(
    ("args", "young"),
    [((), runtime.YOUNG_THRESHOLD), ((runtime.WORKER_YOUNG_THRESHOLD,), 200_000)],
)
def test_tune_gc_freezes_start_up_and_sets_the_young_threshold(
    args: tuple[int, ...], young: int
) -> None:
    before = gc.get_threshold()
    runtime.tune_gc(*args)
    assert gc.get_threshold() == (young, *before[1:])
    assert gc.get_freeze_count() > 0
    assert runtime.YOUNG_THRESHOLD == 50_000  # the api's, measured for its p99
