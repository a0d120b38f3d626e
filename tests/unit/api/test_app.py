"""``ocitag-worker api`` start-up: it serves (503) and shows its metrics before
PostgreSQL and Kafka are there."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka.errors import ConsumerStoppedError
from structlog.testing import capture_logs

from tests.helpers.metrics import expected_families, scrape_families
from tests.helpers.registry import free_port
from tests.helpers.settings_reads import record_reads
from worker import runtime
from worker.api import app as api_app
from worker.api.app import ApiProcess
from worker.api.feed import StateFeed
from worker.settings import COMMAND_SETTINGS, Settings, load_settings


def unreachable_settings(**extra: object) -> Settings:
    """An api's settings whose Kafka and PostgreSQL nobody listens on, with ``extra``."""
    return load_settings(
        {
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",  # nothing listens
            "database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/none",
            "api_host": "127.0.0.1",
            "api_port": 0,
            "http_host": "127.0.0.1",
            "log_level": "warning",
            **extra,
        },
        environ={},
    )


async def test_serves_its_own_metrics_before_its_services_are_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probes = free_port()
    settings = unreachable_settings(http_port=probes)
    recorded = record_reads(monkeypatch)
    process = ApiProcess(settings)
    await process.start()
    try:
        shown = await scrape_families(probes)
    finally:
        await process.stop()
    # the API's own metrics and the shared ones it moves: no worker or ingest ones at 0
    assert {name for name in shown if name.startswith("ocitag_")} == expected_families("api")
    # what it read is what its flags and start-up line show
    assert recorded.reads <= COMMAND_SETTINGS["api"]
    assert {"api_port", "api_tokens", "http_port"} <= recorded.reads


@pytest.mark.parametrize("tuning", [True, False])
async def test_the_collector_is_tuned_once_started_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch, tuning: bool
) -> None:
    """As the worker's: start-up's objects frozen out of the collector's walks (a full
    collection of them stopped every request for tens of ms), OCITAG_GC_TUNING=false
    leaves the collector as Python sets it."""
    tuned: list[bool] = []
    monkeypatch.setattr(runtime, "tune_gc", lambda: tuned.append(True))
    settings = unreachable_settings(http_port=free_port(), gc_tuning=tuning)
    process = ApiProcess(settings)
    await process.start()
    try:
        assert tuned == ([True] if tuning else [])
    finally:
        await process.stop()


async def test_a_listener_that_failed_to_start_is_replaced_not_restarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Kafka consumer once stopped cannot start again: each attempt to reach the
    outcome topic (absent until the worker creates it) gets a listener of its own."""
    made: list[_Listener] = []

    class _Listener:
        def __init__(self, *_: object) -> None:
            self.stopped = False
            made.append(self)

        async def start(self) -> None:
            if self.stopped:
                raise AssertionError("Did you call `start` twice?")
            if len(made) == 1:  # the topic is not there yet
                raise LookupError("topic t.outcomes has no partitions yet")

        async def stop(self) -> None:
            self.stopped = True

        async def run(self) -> None:
            return None

    monkeypatch.setattr(api_app, "OutcomeListener", _Listener)
    process = ApiProcess(load_settings({"log_level": "warning"}, environ={}))

    async def started(*_: object, **__: object) -> None:
        return None

    monkeypatch.setattr(process._sink, "keep_starting", started)
    await process._connect_kafka()
    assert len(made) == 2 and made[0].stopped and not made[1].stopped
    listener: object = process._listener
    assert listener is made[1] and process.backends.publish is not None


class _Counted:
    """A consumer whose start fails, hangs or succeeds, counting its stops."""

    def __init__(self, start: str) -> None:
        self.stops = 0
        self.started = asyncio.Event()
        self._start = start

    async def start(self) -> None:
        self.started.set()
        if self._start == "fails":
            raise LookupError("topic t.outcomes has no partitions yet")
        if self._start == "hangs":
            await asyncio.sleep(0.05)  # the bootstrap's answer, awaited when cancelled

    async def stop(self) -> None:
        self.stops += 1


@pytest.mark.parametrize(
    ("start", "cancelled", "stops"),
    [
        ("fails", False, 1),  # a failed start is stopped by _fresh
        ("hangs", True, 1),  # a cancelled one by start_whole, and by nothing else
        ("works", False, 0),
    ],
)
async def test_a_fresh_consumer_is_stopped_once_when_its_start_does_not_end_well(
    start: str, cancelled: bool, stops: int
) -> None:
    consumer = _Counted(start)
    task = asyncio.create_task(api_app._fresh(lambda: consumer))
    await consumer.started.wait()
    if cancelled:
        task.cancel()
    outcome = (await asyncio.gather(task, return_exceptions=True))[0]
    expected = {"fails": LookupError, "hangs": asyncio.CancelledError, "works": _Counted}
    assert isinstance(outcome, expected[start])
    assert consumer.stops == stops


class _StoppableConsumer:
    """getmany waits until stop(), then fails as aiokafka's does under a stopped consumer."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    def assignment(self) -> set[object]:
        return set()

    async def getmany(self, **_: object) -> dict[object, list[object]]:
        await self.stopped.wait()
        raise ConsumerStoppedError

    async def stop(self) -> None:
        self.stopped.set()


@pytest.mark.parametrize("stopping", [True, False])
async def test_the_watch_feed_stopped_at_shutdown_logs_no_error(stopping: bool) -> None:
    """Shutdown stops the feed's consumer under its getmany: that is no state_feed_error
    (it was one at every Ctrl-C of `make run`); the same failure otherwise is."""
    feed = StateFeed(unreachable_settings(api_tokens="unit:unit-token-0123456789"))
    consumer = _StoppableConsumer()
    feed._consumer = consumer
    with capture_logs() as logs:
        task = asyncio.create_task(feed.run())
        await asyncio.sleep(0.01)
        await (feed.stop() if stopping else consumer.stop())
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    errors = [entry for entry in logs if entry["event"] == "state_feed_error"]
    assert len(errors) == (0 if stopping else 1)
