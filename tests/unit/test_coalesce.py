"""worker/coalesce.py: batches arriving while a transaction is in flight are applied
together in the next one, and each caller gets exactly its own outcomes, or its own
failure."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker import metrics
from worker.coalesce import CoalescingStore
from worker.errors import Cause, PermanentError, TransientError
from worker.outcomes import Outcome
from worker.plan import Item

T0 = datetime(2026, 12, 6, tzinfo=UTC)
#: a patience no test outlasts: batches wait until a test releases a transaction
SLOW = 3600.0


def items(*names: str) -> list[Item]:
    """Stand-ins for items: the coalescer never looks inside them."""
    return cast(list[Item], list(names))


@dataclass
class GatedStore:
    """Records each ``apply`` (its items and time); each waits for the test to let it
    finish (``release``), unless ``open``. ``refused`` items make an apply that holds
    them raise PermanentError; ``failure`` is raised by the next apply."""

    calls: list[tuple[list[str], datetime]] = field(default_factory=list)
    gates: list[asyncio.Event] = field(default_factory=list)
    open: bool = False
    refused: set[str] = field(default_factory=set)
    failure: Exception | None = None

    async def apply(self, batch: Sequence[Item], processed_at: datetime) -> list[Outcome]:
        names = [cast(str, item) for item in batch]
        self.calls.append((names, processed_at))
        gate = asyncio.Event()
        self.gates.append(gate)
        if not self.open:
            await gate.wait()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        if self.refused & set(names):
            raise PermanentError("refused")
        return [Outcome(name.encode(), name.encode(), 200, "created") for name in names]

    async def ping(self) -> None:
        return None

    def release(self) -> None:
        for gate in self.gates:
            gate.set()


def values(outcomes: list[Outcome]) -> list[str]:
    return [o.value.decode() for o in outcomes]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def one_in_flight(
    store: GatedStore, max_items: int = 100
) -> tuple[CoalescingStore, asyncio.Task[list[Outcome]]]:
    """A grouping store (limit 1, no patience running out) with batch "a"'s transaction
    in flight, held until the test releases it."""
    grouped = CoalescingStore(store, limit=1, max_items=max_items, patience=SLOW)
    first = asyncio.create_task(grouped.apply(items("a"), T0))
    await settle()
    return grouped, first


async def test_a_batch_with_nothing_in_flight_goes_straight_through() -> None:
    store = GatedStore(open=True)
    grouped = CoalescingStore(store, limit=1, max_items=100, patience=SLOW)
    assert values(await grouped.apply(items("a", "b"), T0)) == ["a", "b"]
    assert store.calls == [(["a", "b"], T0)]
    assert await grouped.apply([], T0) == []
    assert len(store.calls) == 1


def transactions() -> tuple[float, float]:
    """How many apply transactions were counted, and their events."""
    registry = metrics.registry("run")
    count = registry.get_sample_value("ocitag_transaction_size_events_count") or 0.0
    return count, registry.get_sample_value("ocitag_transaction_size_events_sum") or 0.0


async def test_batches_arriving_meanwhile_are_applied_together_each_gets_its_own() -> None:
    counted = transactions()
    store = GatedStore()
    grouped, first = await one_in_flight(store)
    later = [
        asyncio.create_task(grouped.apply(items(*names), T0 + timedelta(seconds=n)))
        for n, names in enumerate([("b", "c"), ("d",), ("e", "f")], start=1)
    ]
    await settle()
    assert [c[0] for c in store.calls] == [["a"]]  # the others wait
    store.release()
    await settle()
    store.release()
    assert values(await first) == ["a"]
    assert [values(await task) for task in later] == [["b", "c"], ["d"], ["e", "f"]]
    # one transaction for the three, in their order, at the latest batch's time
    assert store.calls[1] == (["b", "c", "d", "e", "f"], T0 + timedelta(seconds=3))
    assert len(store.calls) == 2
    # two transactions, of 1 and 5 events
    assert transactions() == (counted[0] + 2, counted[1] + 6)


async def test_a_group_holds_at_most_max_items_and_a_larger_batch_goes_alone() -> None:
    store = GatedStore()
    grouped, first = await one_in_flight(store, max_items=3)
    batches = [("b", "c"), ("d",), ("e",), ("f", "g", "h", "i"), ("j",)]
    later = [asyncio.create_task(grouped.apply(items(*b), T0)) for b in batches]
    for _ in range(6):
        await settle()
        store.release()
    await asyncio.gather(first, *later)
    assert [c[0] for c in store.calls] == [
        ["a"],
        ["b", "c", "d"],
        ["e"],  # the next one would make 5
        ["f", "g", "h", "i"],  # larger than max_items: alone
        ["j"],
    ]
    assert [values(t.result()) for t in later] == [list(b) for b in batches]


CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="none")


async def test_a_group_runs_in_its_first_batchs_context() -> None:
    """(its trace span: the group's statements are that batch's children)"""
    seen: list[str] = []

    class Seeing(GatedStore):
        async def apply(self, batch: Sequence[Item], processed_at: datetime) -> list[Outcome]:
            seen.append(CALLER.get())
            return await super().apply(batch, processed_at)

    store = Seeing()
    grouped = CoalescingStore(store, limit=1, max_items=100, patience=SLOW)

    async def caller(name: str) -> list[Outcome]:
        CALLER.set(name)
        return await grouped.apply(items(name), T0)

    first = asyncio.create_task(caller("a"))
    await settle()
    later = [asyncio.create_task(caller(n)) for n in "bc"]
    await settle()
    store.release()
    await first
    await settle()
    store.release()
    await asyncio.gather(*later)
    assert seen == ["a", "b"]


async def test_up_to_limit_transactions_run_at_once() -> None:
    store = GatedStore()
    grouped = CoalescingStore(store, limit=2, max_items=100, patience=SLOW)
    tasks = [asyncio.create_task(grouped.apply(items(n), T0)) for n in "abcd"]
    await settle()
    assert [c[0] for c in store.calls] == [["a"], ["b"]]
    store.release()
    await settle()
    store.release()
    await asyncio.gather(*tasks)
    assert [c[0] for c in store.calls] == [["a"], ["b"], ["c", "d"]]


async def test_a_refused_event_is_found_by_each_batch_alone() -> None:
    store = GatedStore(refused={"d"})
    grouped, first = await one_in_flight(store)
    ok1 = asyncio.create_task(grouped.apply(items("b", "c"), T0))
    bad = asyncio.create_task(grouped.apply(items("d", "e"), T0))
    ok2 = asyncio.create_task(grouped.apply(items("f"), T0))
    store.open = True
    store.release()
    await asyncio.gather(first, ok1, ok2, bad, return_exceptions=True)
    assert values(ok1.result()) == ["b", "c"]
    assert values(ok2.result()) == ["f"]
    assert isinstance(bad.exception(), PermanentError)
    assert [c[0] for c in store.calls] == [
        ["a"],
        ["b", "c", "d", "e", "f"],  # refused as a whole
        ["b", "c"],
        ["d", "e"],
        ["f"],
    ]


async def test_any_other_failure_reaches_every_caller_of_the_group() -> None:
    store = GatedStore()
    grouped, first = await one_in_flight(store)
    group = [asyncio.create_task(grouped.apply(items(n), T0)) for n in "bc"]
    store.release()
    await first
    store.failure = TransientError(Cause.DB_CONNECTION, "away")
    await settle()
    store.release()
    results = await asyncio.gather(*group, return_exceptions=True)
    assert all(isinstance(r, TransientError) for r in results)
    # and the next batch goes on
    store.open = True
    assert values(await grouped.apply(items("d"), T0)) == ["d"]


async def test_a_caller_given_up_leaves_its_group_or_the_queue() -> None:
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    store = GatedStore()
    grouped, first = await one_in_flight(store)
    queued = asyncio.create_task(grouped.apply(items("b"), T0))
    await settle()
    queued.cancel()  # before its group began: not applied at all
    await settle()
    in_group = asyncio.create_task(grouped.apply(items("c"), T0))
    other = asyncio.create_task(grouped.apply(items("d"), T0))
    store.release()
    await first
    await settle()
    in_group.cancel()  # while its group is in flight: the others still get theirs
    store.failure = TransientError(Cause.DB_CONNECTION, "away")
    store.release()
    assert isinstance((await asyncio.gather(other, return_exceptions=True))[0], TransientError)
    assert queued.cancelled() and in_group.cancelled()
    assert [c[0] for c in store.calls] == [["a"], ["c", "d"]]
    await grouped.close()
    import gc

    gc.collect()
    await settle()
    assert unretrieved == []


def test_impossible_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        CoalescingStore(GatedStore(), limit=-1, max_items=1)
    with pytest.raises(ValueError, match="at least"):
        CoalescingStore(GatedStore(), limit=1, max_items=0)
    with pytest.raises(ValueError, match="at least"):
        CoalescingStore(GatedStore(), limit=1, max_items=1, alone_from=0)
    with pytest.raises(ValueError, match="patience"):
        CoalescingStore(GatedStore(), limit=1, max_items=1, patience=0)


async def test_a_limit_of_zero_sends_every_batch_straight_to_the_store() -> None:
    store = GatedStore()
    grouped = CoalescingStore(store, limit=0, max_items=100, patience=SLOW)
    tasks = [asyncio.create_task(grouped.apply(items(n), T0)) for n in "abc"]
    await settle()
    assert [c[0] for c in store.calls] == [["a"], ["b"], ["c"]]  # all at once
    store.release()
    assert [values(t) for t in await asyncio.gather(*tasks)] == [["a"], ["b"], ["c"]]


async def test_a_large_batch_goes_straight_through_whatever_is_in_flight() -> None:
    store = GatedStore()
    grouped = CoalescingStore(store, limit=1, max_items=100, alone_from=3, patience=SLOW)
    small = asyncio.create_task(grouped.apply(items("a"), T0))
    await settle()
    large = asyncio.create_task(grouped.apply(items("b", "c", "d"), T0))
    await settle()
    assert [c[0] for c in store.calls] == [["a"], ["b", "c", "d"]]  # beside the small one
    store.release()
    assert [values(t) for t in await asyncio.gather(small, large)] == [["a"], ["b", "c", "d"]]


async def test_while_a_large_batch_is_in_flight_small_ones_go_straight_too() -> None:
    store = GatedStore()
    grouped = CoalescingStore(store, limit=1, max_items=100, alone_from=3, patience=SLOW)
    large = asyncio.create_task(grouped.apply(items("a", "b", "c"), T0))
    small = [asyncio.create_task(grouped.apply(items(n), T0)) for n in "de"]
    await settle()
    # a backlog: its remainders wait for nothing
    assert [c[0] for c in store.calls] == [["a", "b", "c"], ["d"], ["e"]]
    store.release()
    await asyncio.gather(large, *small)
    later = [asyncio.create_task(grouped.apply(items(n), T0)) for n in "fg"]
    await settle()
    assert [c[0] for c in store.calls][3:] == [["f"]]  # no backlog: grouped again
    store.release()
    await settle()
    store.release()
    await asyncio.gather(*later)
    assert [c[0] for c in store.calls][3:] == [["f"], ["g"]]


async def test_a_batch_waits_at_most_patience_then_its_group_starts_beside() -> None:
    store = GatedStore()
    grouped = CoalescingStore(store, limit=1, max_items=100, patience=0.05)
    slow = asyncio.create_task(grouped.apply(items("a"), T0))  # never ends by itself
    await settle()
    waiting = [asyncio.create_task(grouped.apply(items(n), T0)) for n in "bc"]
    await asyncio.sleep(0.01)
    assert [c[0] for c in store.calls] == [["a"]]  # within patience: waiting
    await asyncio.sleep(0.08)
    assert [c[0] for c in store.calls] == [["a"], ["b", "c"]]  # then beside the slow one
    later = asyncio.create_task(grouped.apply(items("d"), T0))
    await asyncio.sleep(0.08)
    assert [c[0] for c in store.calls] == [["a"], ["b", "c"], ["d"]]
    store.release()
    await asyncio.gather(slow, *waiting, later)
    # nothing waits: no timer left armed
    assert grouped._overdue is None


async def test_close_ends_groups_nobody_waits_for_within_its_grace() -> None:
    store = GatedStore()
    grouped, first = await one_in_flight(store)
    queued = asyncio.create_task(grouped.apply(items("b"), T0))
    await settle()
    first.cancel()  # the first's transaction ends with it; the group of b begins
    await settle()
    queued.cancel()  # b's group goes on without anyone waiting
    await settle()
    assert [c[0] for c in store.calls] == [["a"], ["b"]]
    await grouped.close(grace=0.01)  # b's apply never ends by itself: cancelled
    assert not grouped._groups


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=20),
    limit=st.integers(min_value=1, max_value=3),
    max_items=st.integers(min_value=1, max_value=12),
    releases=st.lists(st.integers(min_value=0, max_value=3), min_size=20, max_size=20),
)
def test_every_caller_gets_exactly_its_own_outcomes_in_order(
    sizes: list[int], limit: int, max_items: int, releases: list[int]
) -> None:
    """Whatever the arrivals, the grouping and the limits: each batch's outcomes are its
    own items', in order; every item is applied exactly once; a group never exceeds
    max_items unless it is one batch; never more than ``limit`` applies at once."""

    async def scenario() -> None:
        store = GatedStore()
        grouped = CoalescingStore(store, limit=limit, max_items=max_items, patience=SLOW)
        batches = [[f"{n}.{i}" for i in range(size)] for n, size in enumerate(sizes)]
        tasks = []
        for batch, pause in zip(batches, releases, strict=False):
            tasks.append(asyncio.create_task(grouped.apply(items(*batch), T0)))
            for _ in range(pause):
                await asyncio.sleep(0)
            if pause == 3:
                store.release()
            unfinished = sum(1 for gate in store.gates if not gate.is_set())
            assert unfinished <= limit
        while not all(t.done() for t in tasks):
            store.release()
            await asyncio.sleep(0)
        assert [values(t.result()) for t in tasks] == batches
        applied = [name for names, _ in store.calls for name in names]
        assert sorted(applied) == sorted(name for batch in batches for name in batch)
        starts = {batch[0]: len(batch) for batch in batches}
        for names, _ in store.calls:
            alone = len(names) == starts.get(names[0])
            assert len(names) <= max_items or alone

    asyncio.run(scenario())
