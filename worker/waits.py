"""Waiting for an event, for at most a while: the one way the worker's loops pause.

Why not ``asyncio.wait_for(event.wait(), seconds)``: on Python 3.11 it returns the inner
wait's result when the waiting task is cancelled in the same turn that the wait ends
(the event set then), and the cancellation is lost (fixed in 3.12). A loop that pauses
this way then goes on instead of stopping: the committer waited for work forever and a
worker's stop hung on it (seen in CI). ``asyncio.timeout`` raises the cancellation
whatever else happened in that turn.
"""

from __future__ import annotations

import asyncio


async def wait_at_most(event: asyncio.Event, seconds: float | None) -> bool:
    """Until ``event`` is set or ``seconds`` have passed (None: no limit); whether it is
    set. A cancellation of the waiting task is never lost."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()
