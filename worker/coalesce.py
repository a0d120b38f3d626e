"""Runs that reach the store together applied in one transaction (group commit).

The pipeline runs one fetch's small partition batches as one run (worker/batches.py),
one batch per partition in flight at a time, runs concurrently. Before runs, a steady
low rate made many small batches (about 6 to 10 events each at 2,000 events/s on 6
partitions); runs of small fetches (about 10 events each) still come close together.
Each pays a transaction's fixed cost on both sides: four round
trips, the statements' planning and the commit's WAL flush in PostgreSQL, the
arguments' set-up in the worker. While ``limit`` transactions are in flight, the
batches that arrive wait and are then applied together, in one ``Store.apply`` of their
events one after another (at most ``max_items`` together; a batch larger than that alone):
the batch waits for one transaction in flight, at most ``PATIENCE`` (then its group
starts beside it), and the transactions are as many as the database can take rather
than as many as there are partitions.

Only small batches are grouped (fewer than ``ALONE_FROM`` events), and only while no
large one is in flight. A larger one goes straight to the store, whatever is in flight,
as without grouping, and so does every batch while one is in flight: a backlog's fetches
leave small remainders of a partition's buffer, which must not wait either. A
transaction's fixed cost is a few hundred µs on each side, a few µs per event of a batch
of 100 against the hundreds of µs of each event's own work, so a large batch gains
nothing from company; and a backlog's batches must not wait for one another: their
transactions overlapping is what keeps both processes busy in a drain (one at a time, a
1 M backlog drained at three quarters of the pace, measured).

Why this is safe: ``Store.apply`` gives every event the outcome it gets when the events
are applied one batch after another, whatever the split into batches (the store's
property tests shuffle and split the same histories every way). A partition has one
batch in flight at a time, so its order holds. The events of a refused batch
(``PermanentError``: the database refuses an event) are applied again caller by caller,
so that each batch finds its refused event alone, as without grouping. Any other failure
reaches every caller of the group, each retrying its own batch as before. A caller given
up while its group is in flight leaves the transaction to the others: what it commits is
redelivered and replayed, as a batch cancelled after its commit is today. With tracing
on, a group's statements are children of its first batch's span.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from worker import metrics
from worker.errors import PermanentError
from worker.outcomes import Outcome
from worker.plan import Item
from worker.shutdown import finish_or_cancel
from worker.store import EventStore

#: batches of at least this many events are never grouped (the module's doc)
ALONE_FROM = 100
#: seconds a batch waits for a transaction in flight at most: then its group starts
#: beside it (a slow transaction, a checkpoint's or a lock's, holds up no batch longer)
PATIENCE = 0.02


@dataclass(slots=True)
class _Waiting:
    items: Sequence[Item]
    processed_at: datetime
    future: asyncio.Future[list[Outcome]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: the caller's context (its batch's trace span): a group's transaction runs in its
    #: first batch's, so that its statements' spans are that batch's children
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class CoalescingStore:
    """An ``EventStore`` that applies the small batches arriving while ``limit``
    transactions of small batches are in flight together, in the next one
    (``OCITAG_APPLY_TRANSACTIONS``); with a limit of 0, and for batches of ``alone_from``
    events or more, every batch goes straight to the store, all at once."""

    def __init__(
        self,
        store: EventStore,
        *,
        limit: int,
        max_items: int,
        alone_from: int = ALONE_FROM,
        patience: float = PATIENCE,
    ) -> None:
        if limit < 0 or max_items < 1 or alone_from < 1 or patience <= 0:
            raise ValueError(
                "limit must be at least 0, max_items and alone_from at least 1, patience above 0"
            )
        self._store = store
        self._limit = limit
        self._max_items = max_items
        self._alone_from = alone_from
        self._patience = patience
        self._running = 0
        #: large batches' transactions in flight
        self._large = 0
        self._queue: list[_Waiting] = []
        self._groups: set[asyncio.Task[None]] = set()
        #: armed while batches wait: their group starts when it fires, limit or not
        self._overdue: asyncio.TimerHandle | None = None

    async def ping(self) -> None:
        await self._store.ping()

    async def apply(self, items: Sequence[Item], processed_at: datetime) -> list[Outcome]:
        if not items:
            return []
        if not self._limit or len(items) >= self._alone_from or self._large:
            # a large batch gains nothing from company; while one is in flight (a
            # backlog), small ones (a large fetch's remainders) go straight as well
            large = len(items) >= self._alone_from
            self._large += large
            try:
                return await self._transaction(items, processed_at)
            finally:
                self._large -= large
        if self._running < self._limit and not self._queue:
            # nothing to wait for: in the caller's own task, as without grouping (a
            # cancelled caller cancels its own transaction)
            self._running += 1
            try:
                return await self._transaction(items, processed_at)
            finally:
                self._running -= 1
                self._start_groups()
        waiting = _Waiting(items, processed_at)
        self._queue.append(waiting)
        if self._overdue is None:
            loop = asyncio.get_running_loop()
            self._overdue = loop.call_later(self._patience, self._start_overdue)
        try:
            return await waiting.future
        finally:
            if waiting in self._queue:  # cancelled before its group began
                self._queue.remove(waiting)

    async def close(self, grace: float = 5.0) -> None:
        """Let the groups in flight end (their callers may have been given up: a group
        is nobody's task), for at most ``grace`` seconds, before the pool closes."""
        if self._overdue is not None:
            self._overdue.cancel()
            self._overdue = None
        await finish_or_cancel(self._groups, grace)

    async def _transaction(self, items: Sequence[Item], at: datetime) -> list[Outcome]:
        """One apply transaction, counted by its events."""
        metrics.TRANSACTION_EVENTS.observe(len(items))
        return await self._store.apply(items, at)

    def _start_groups(self) -> None:
        while self._running < self._limit and self._queue:
            self._start_group()
        if not self._queue and self._overdue is not None:
            self._overdue.cancel()
            self._overdue = None

    def _start_overdue(self) -> None:
        """The oldest batches waited ``patience``: their group starts, limit or not."""
        self._overdue = None
        if self._queue:
            self._start_group()
        if self._queue:
            loop = asyncio.get_running_loop()
            self._overdue = loop.call_later(self._patience, self._start_overdue)

    def _start_group(self) -> None:
        """The next group from the queue's head (at most ``max_items`` events), started."""
        group = [self._queue.pop(0)]
        size = len(group[0].items)
        while self._queue and size + len(self._queue[0].items) <= self._max_items:
            size += len(self._queue[0].items)
            group.append(self._queue.pop(0))
        self._running += 1
        task = asyncio.create_task(self._run(group), name="store-group", context=group[0].context)
        self._groups.add(task)
        task.add_done_callback(self._groups.discard)

    async def _run(self, group: list[_Waiting]) -> None:
        try:
            await self._apply(group)
        except BaseException:
            for waiting in group:
                if not waiting.future.done():
                    waiting.future.cancel()
            raise
        finally:
            self._running -= 1
            self._start_groups()

    async def _apply(self, group: list[_Waiting]) -> None:
        """One transaction for the group, each caller's outcomes handed to it."""
        if len(group) == 1:
            await _settle(group[0], self._transaction(group[0].items, group[0].processed_at))
            return
        items = [item for waiting in group for item in waiting.items]
        # the group's record time: its latest batch's (none is recorded before it)
        at = max(waiting.processed_at for waiting in group)
        try:
            outcomes = await self._transaction(items, at)
        except PermanentError:
            # one of the group's events is refused: each batch alone, so that its caller
            # finds the refused event among its own
            for waiting in group:
                await _settle(waiting, self._transaction(waiting.items, waiting.processed_at))
            return
        except Exception as exc:
            for waiting in group:
                _fail(waiting, exc)
            return
        start = 0
        for waiting in group:
            end = start + len(waiting.items)
            if not waiting.future.done():  # a caller cancelled meanwhile
                waiting.future.set_result(outcomes[start:end])
            start = end


async def _settle(waiting: _Waiting, applying: Awaitable[list[Outcome]]) -> None:
    """Await ``applying`` and hand its result or failure to the waiting caller."""
    try:
        outcomes = await applying
    except Exception as exc:
        _fail(waiting, exc)
        return
    if not waiting.future.done():
        waiting.future.set_result(outcomes)


def _fail(waiting: _Waiting, exc: Exception) -> None:
    if not waiting.future.done():
        waiting.future.set_exception(exc)
