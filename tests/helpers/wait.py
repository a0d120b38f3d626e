"""Waiting for a condition instead of sleeping a fixed time and hoping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(check: Callable[[], object], timeout: float = 20.0) -> None:
    """Return once ``check()`` (a function or a coroutine function) is truthy; fail with
    TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.2)
