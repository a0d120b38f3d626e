"""``start_whole``: a client start cancelled midway is let finish, within its bound, and
the client closed, within its bound too; the cancellation always goes on."""

from __future__ import annotations

import asyncio

import pytest

from worker.kafka import start_whole


class _Client:
    def __init__(self, *, start_takes: float | None, close_takes: float | None) -> None:
        self.started = asyncio.Event()
        self.start_finished = False
        self.closes = 0
        self._start_takes, self._close_takes = start_takes, close_takes

    async def start(self) -> None:
        self.started.set()
        await _take(self._start_takes)
        self.start_finished = True

    async def close(self) -> None:
        self.closes += 1
        await _take(self._close_takes)


async def _take(seconds: float | None) -> None:
    """``seconds``, or for ever when None."""
    if seconds is None:
        await asyncio.Event().wait()
    else:
        await asyncio.sleep(seconds)


async def _cancel_once_started(client: _Client, grace: float) -> None:
    task = asyncio.create_task(start_whole(client.start, client.close, grace=grace))
    await client.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)  # a TimeoutError here: it did not end


@pytest.mark.parametrize(
    ("start_takes", "close_takes", "finished"),
    [
        (0.01, 0.0, True),  # the start in flight finishes, then the client is closed
        (None, 0.0, False),  # a start that never finishes is given up after the grace
        (0.01, None, True),  # a close that never returns is given up after the grace
        (None, None, False),  # both
    ],
)
async def test_a_cancelled_start_ends_within_its_bounds_and_closes_the_client(
    start_takes: float | None, close_takes: float | None, finished: bool
) -> None:
    client = _Client(start_takes=start_takes, close_takes=close_takes)
    await _cancel_once_started(client, grace=0.05)
    assert (client.start_finished, client.closes) == (finished, 1)


async def test_a_start_that_is_not_cancelled_is_just_a_start() -> None:
    client = _Client(start_takes=0.0, close_takes=0.0)
    await start_whole(client.start, client.close)
    assert (client.start_finished, client.closes) == (True, 0)
