"""Requests waiting for their outcome, matched by (``causationsource``, ``causationid``).

A request registers its waiter BEFORE it publishes (an outcome can come back before the
producer's acknowledgement does), and removes it when it answers, whatever happened.
Several requests may wait for one key (a retried ``Idempotency-Key`` while the first is
still waiting): each gets the outcome. Outcomes nobody here waits for (other replicas'
requests, other producers' events) are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import orjson

Key = tuple[str, str]


class Waiters:
    def __init__(self) -> None:
        self._waiting: dict[Key, list[asyncio.Future[dict[str, Any]]]] = {}

    def __len__(self) -> int:
        return sum(len(futures) for futures in self._waiting.values())

    @contextlib.contextmanager
    def expect(self, key: Key) -> Iterator[asyncio.Future[dict[str, Any]]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        try:
            yield future
        finally:
            futures = self._waiting.get(key, [])
            if future in futures:
                futures.remove(future)
            if not futures:
                self._waiting.pop(key, None)
            future.cancel()

    def deliver(self, value: bytes | None) -> bool:
        """Hand one outcome record's value to whoever waits for it; True if somebody did.
        Values that are not outcomes are ignored: this never raises."""
        if not self._waiting or not value:
            return False
        try:
            outcome = orjson.loads(value)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(outcome, dict):
            return False
        source, event_id = outcome.get("causationsource"), outcome.get("causationid")
        if not isinstance(source, str) or not isinstance(event_id, str):
            return False
        futures = self._waiting.get((source, event_id))
        if not futures:
            return False
        for future in futures:
            if not future.done():
                future.set_result(outcome)
        return True
