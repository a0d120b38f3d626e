"""Liveness: the decision (given each part's last beat and now), then the parts that
beat: the ``http`` heartbeat and the api's outcome listener, on a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError

from tests.helpers.fakes import FakeClock
from tests.helpers.registry import free_port
from tests.helpers.wait import eventually
from worker.api import listener
from worker.api.listener import OutcomeListener
from worker.api.waiters import Waiters
from worker.health import (
    COMMAND_PARTS,
    HTTP,
    OUTCOME_LISTENER,
    POLL_LOOP,
    Beat,
    Check,
    Health,
    liveness,
)
from worker.settings import load_settings

NOW = 1_000.0


@pytest.mark.parametrize(
    ("beats", "ok", "reason"),
    [
        ({}, True, "starting"),
        ({POLL_LOOP: Beat(NOW - 1)}, True, "poll-loop ran 1 s ago"),
        ({POLL_LOOP: Beat(NOW - 60)}, True, "poll-loop ran 60 s ago"),  # not over it
        (
            {POLL_LOOP: Beat(NOW - 60.4)},
            False,
            "poll-loop has not run for 60.4 s (timeout 60 s)",
        ),
        (
            {POLL_LOOP: Beat(NOW - 197)},
            False,
            "poll-loop has not run for 197 s (timeout 60 s)",
        ),
        (
            {HTTP: Beat(NOW - 0.5), OUTCOME_LISTENER: Beat(NOW - 90)},
            False,
            "outcome-listener has not run for 90 s (timeout 60 s)",
        ),
        (
            {HTTP: Beat(NOW - 61), OUTCOME_LISTENER: Beat(NOW - 90)},
            False,
            "outcome-listener has not run for 90 s, http has not run for 61 s (timeout 60 s)",
        ),
        # waiting for a service is alive, however long: a restart would not bring it back
        (
            {HTTP: Beat(NOW - 0.2), OUTCOME_LISTENER: Beat(NOW - 900, "Kafka")},
            True,
            "http ran 0.2 s ago, outcome-listener waiting for Kafka",
        ),
        (
            {HTTP: Beat(NOW - 70), OUTCOME_LISTENER: Beat(NOW - 900, "Kafka")},
            False,
            "http has not run for 70 s (timeout 60 s)",
        ),
    ],
)
def test_liveness(beats: dict[str, Beat], ok: bool, reason: str) -> None:
    check = liveness(beats, NOW, 60.0)
    assert (check.ok, check.reason) == (ok, reason)


def test_every_watched_part_is_named_from_the_start() -> None:
    clock = FakeClock()
    health = Health(60.0, clock, parts=COMMAND_PARTS["api"])
    clock.advance(600)  # start-up waits as long as it must
    assert health.live() == Check(
        True, "http waiting for start-up, outcome-listener waiting for start-up"
    )
    health.beat(HTTP)
    clock.advance(61)
    assert health.live() == Check(False, "http has not run for 61 s (timeout 60 s)")


def test_a_beat_ends_waiting() -> None:
    clock = FakeClock()
    health = Health(60.0, clock)
    health.waiting(POLL_LOOP, "Kafka")
    clock.advance(600)
    assert health.live().ok
    health.beat(POLL_LOOP)
    clock.advance(61)
    assert health.live().reason == "poll-loop has not run for 61 s (timeout 60 s)"


async def test_heartbeat_goes_stale_while_the_loop_is_blocked_and_when_it_dies() -> None:
    clock = FakeClock()
    health = Health(0.2, clock)  # a beat each 0.05 s of real time
    heartbeat = asyncio.create_task(health.heartbeat(HTTP))
    await asyncio.sleep(0)
    assert health.live().ok
    clock.advance(3)  # 3 s pass and the loop runs no task: it was blocked
    blocked = health.live()
    assert (blocked.ok, blocked.reason) == (False, "http has not run for 3 s (timeout 0.2 s)")
    await eventually(lambda: health.live().ok)  # the loop runs again: so does the beat
    heartbeat.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await heartbeat
    clock.advance(1)
    assert health.live().reason == "http has not run for 1 s (timeout 0.2 s)"


Fetch = Callable[[int], Awaitable[dict[object, list[object]]]]


async def _listen(
    monkeypatch: pytest.MonkeyPatch, fetch: Fetch, turns: int
) -> tuple[Health, FakeClock, list[tuple[bool, str]]]:
    """The outcome listener's loop with ``fetch(call)`` as its consumer's getmany (each
    call half a second on the clock, as its timeout), run for ``turns`` calls; every
    /healthz answer seen at each call."""
    clock = FakeClock()
    health = Health(2.0, clock)
    seen: list[tuple[bool, str]] = []

    async def getmany(_: AIOKafkaConsumer, **__: object) -> dict[object, list[object]]:
        clock.advance(0.5)  # the probe may ask at the end of the fetch's wait
        check = health.live()
        seen.append((check.ok, check.reason))
        await asyncio.sleep(0)  # as a real fetch does, let the other tasks run
        return await fetch(len(seen))

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", getmany)
    settings = load_settings({"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"}, environ={})
    outcomes = OutcomeListener(settings, Waiters(), health)
    task = asyncio.create_task(outcomes.run())
    try:
        await eventually(lambda: len(seen) >= turns)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await outcomes.stop()
    return health, clock, seen


async def test_an_idle_listener_beats_at_each_empty_fetch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def nothing(_: int) -> dict[object, list[object]]:
        return {}

    _, _, seen = await _listen(monkeypatch, nothing, turns=12)  # 6 s: 3 timeouts
    assert all(ok for ok, _ in seen), seen
    assert seen[-1] == (True, "outcome-listener ran 0.5 s ago")


async def test_a_listener_whose_fetch_fails_still_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listener, "_ERROR_PAUSE_SECONDS", 0.01)

    async def away(call: int) -> dict[object, list[object]]:
        if 2 <= call <= 8:  # 3.5 s of failing fetches: beyond the timeout
            raise KafkaConnectionError("broker away")
        return {}

    _, _, seen = await _listen(monkeypatch, away, turns=10)
    assert all(ok for ok, _ in seen), seen


async def test_a_stuck_listener_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def stuck(call: int) -> dict[object, list[object]]:
        if call >= 2:
            await asyncio.Event().wait()  # a fetch that never returns
        return {}

    health, clock, _ = await _listen(monkeypatch, stuck, turns=2)
    clock.advance(2.5)  # 3 s since the stuck fetch began
    check = health.live()
    assert (check.ok, check.reason) == (
        False,
        "outcome-listener has not run for 3 s (timeout 2 s)",
    )
