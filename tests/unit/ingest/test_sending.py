"""Ingest's sends in flight (worker/ingest/sending.py): on shutdown, the sends that
outlived their delivery are given a grace, then cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from worker.ingest.sending import AckTimeoutError, InFlightSends
from worker.kafka import Message


async def test_shutdown_waits_for_the_sends_left_running_then_cancels_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two deliveries answered at their deadline leave their sends running; shutdown gives
    them SEND_GRACE_SECONDS (0.3 here): the send acknowledged within it ends as it would
    have, the other is cancelled then, and none is left pending. Before, the second was
    left pending for the producer's stop and the process's end."""
    monkeypatch.setattr("worker.ingest.sending.SEND_GRACE_SECONDS", 0.3)
    closing = asyncio.get_running_loop().create_future()
    ended: list[str] = []

    class Sink:
        async def send_all(self, messages: Sequence[Message]) -> None:
            try:
                await closing
                await asyncio.sleep(0.1 if messages[0].value == b"quick" else 3600)
            except asyncio.CancelledError:
                ended.append("cancelled")
                raise
            ended.append("acknowledged")

    sends = InFlightSends(Sink())
    for value in (b"quick", b"wedged"):
        with pytest.raises(AckTimeoutError):
            await sends.send([Message("ocitag.events", b"k", value, [])], budget=0.01)
    assert ended == []
    loop = asyncio.get_running_loop()
    started = loop.time()
    closing.set_result(None)
    await asyncio.wait_for(sends.close(), 10)
    assert sorted(ended) == ["acknowledged", "cancelled"]
    assert 0.25 < loop.time() - started < 2
    assert sends._sending == {}
