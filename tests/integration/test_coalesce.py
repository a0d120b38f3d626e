"""Partition batches grouped into one transaction (worker/coalesce.py) on the real store:
every outcome is the one the events get applied in the order the transactions took
them, every row the model's."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.model import Model
from tests.helpers.store import CTX, items, model_rows, now, rows, summary
from tests.helpers.strategies import histories
from worker.coalesce import CoalescingStore
from worker.events import TagEvent
from worker.outcomes import Outcome
from worker.plan import Item
from worker.store import Store

pytestmark = pytest.mark.integration


class Recording:
    """The real store, recording the items of each transaction in the order applied."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.applied: list[Item] = []

    async def apply(self, batch: Sequence[Item], processed_at: datetime) -> list[Outcome]:
        outcomes = await self._store.apply(batch, processed_at)
        self.applied.extend(batch)  # one transaction at a time (limit 1): its order
        return outcomes

    async def ping(self) -> None:
        await self._store.ping()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories(max_events=40), data=st.data())
async def test_partitions_grouped_into_transactions_get_the_model_outcomes(
    pool: asyncpg.Pool, history: list[TagEvent], data: st.DataObject
) -> None:
    """Random histories (moves, deletions, duplicates, id reuse) dealt to three
    partitions, each applying its batches one after another and all at once, as the
    worker's pipeline does: each event's outcome is the model's for the order the
    grouped transactions applied them in, and the rows are the model's."""
    await pool.execute("TRUNCATE ocitags, processed_events")
    partitions: list[list[TagEvent]] = [[], [], []]
    for event in data.draw(st.permutations(history), label="order"):
        partitions[data.draw(st.integers(0, 2), label="partition")].append(event)
    sizes = [data.draw(st.integers(1, 5), label="batch size") for _ in partitions]
    recording = Recording(Store(pool, CTX))
    # never overdue: one transaction at a time, so that the recorded order is the applied one
    grouped = CoalescingStore(
        recording, limit=1, max_items=data.draw(st.integers(1, 12)), patience=3600.0
    )
    got: dict[int, Outcome] = {}  # by the item's offset: unique across partitions

    async def partition(number: int, mine: list[TagEvent], size: int) -> None:
        for start in range(0, len(mine), size):
            batch = items(mine[start : start + size], 1000 * number + start)
            outcomes = await grouped.apply(batch, now())
            got.update((item.record.offset, o) for item, o in zip(batch, outcomes, strict=True))

    await asyncio.gather(
        *(partition(n, m, s) for n, (m, s) in enumerate(zip(partitions, sizes, strict=True)))
    )
    assert len(recording.applied) == len(history)
    model = Model()
    for item in recording.applied:
        assert isinstance(item.event, TagEvent)
        assert summary(got[item.record.offset]) == model.deliver(item.event), item.event
    assert await rows(pool) == model_rows(model)
