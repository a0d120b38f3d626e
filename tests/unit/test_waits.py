"""worker/waits.py: a wait ends when the event is set or the time is up, and a
cancellation in the turn the event is set is not lost (Python 3.11's ``wait_for`` loses
it)."""

from __future__ import annotations

import asyncio

import pytest

from worker.waits import wait_at_most


async def test_the_wait_ends_when_the_event_is_set() -> None:
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_at_most(event, 10))
    await asyncio.sleep(0)
    event.set()
    assert await asyncio.wait_for(waiting, 1) is True


async def test_the_wait_ends_when_the_time_is_up() -> None:
    assert await wait_at_most(asyncio.Event(), 0.01) is False


async def test_no_limit_waits_for_the_event() -> None:
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_at_most(event, None))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    event.set()
    assert await asyncio.wait_for(waiting, 1) is True


async def test_a_cancellation_in_the_turn_the_event_is_set_is_not_lost() -> None:
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_at_most(event, 10))
    await asyncio.sleep(0)  # waiting on the event
    event.set()  # the wait ends next turn ...
    waiting.cancel()  # ... the turn the task is cancelled
    with pytest.raises(asyncio.CancelledError):
        await waiting
