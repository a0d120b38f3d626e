"""A client whose start is cancelled mid-bootstrap (a process stopped in its first
second) leaves no connection open: ``start_whole`` against aiokafka's own start, through
a proxy to the real broker that holds the bootstrap's metadata answer."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from tests.helpers.kafkaproxy import HoldingProxy
from tests.helpers.services import Services
from tests.helpers.wait import eventually
from worker.kafka import new_producer, start_whole
from worker.settings import Settings

pytestmark = pytest.mark.integration

HOLD_SECONDS = 1.0


@pytest.fixture
async def proxy(services: Services) -> AsyncIterator[HoldingProxy]:
    host, _, port = services.kafka_bootstrap.split(",")[0].rpartition(":")
    holding = HoldingProxy(host, int(port), HOLD_SECONDS)
    await holding.start()
    yield holding
    await holding.close()


def _client(make_settings: Callable[..., Settings], bootstrap: str, kind: str) -> Any:
    if kind == "producer":  # the worker's own, idempotent: its start asks for more
        return new_producer(make_settings(kafka_bootstrap_servers=bootstrap))
    if kind == "consumer":
        return AIOKafkaConsumer(bootstrap_servers=bootstrap)
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap)


async def _cancel_mid_bootstrap(
    proxy: HoldingProxy, start: Callable[[], Coroutine[Any, Any, object]]
) -> list[str]:
    """Start, cancel once the metadata request is held, collect; what asyncio reported."""
    reported: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(str(context["message"])))
    try:
        task = asyncio.create_task(start())
        await asyncio.wait_for(proxy.second_request.wait(), 20)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del task
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    return reported


@pytest.mark.parametrize("kind", ["producer", "consumer", "admin"])
async def test_a_start_cancelled_mid_bootstrap_closes_its_connection(
    proxy: HoldingProxy, make_settings: Callable[..., Settings], kind: str
) -> None:
    client = _client(make_settings, f"127.0.0.1:{proxy.port}", kind)
    close = client.close if kind == "admin" else client.stop
    reported = await _cancel_mid_bootstrap(proxy, lambda: start_whole(client.start, close))
    assert not [m for m in reported if "Unclosed AIOKafkaConnection" in m], reported
    await eventually(lambda: proxy.open_connections == 0, timeout=10)


async def test_aiokafka_alone_leaks_the_bootstrap_connection_when_cancelled_there(
    proxy: HoldingProxy, make_settings: Callable[..., Settings]
) -> None:
    """Why ``start_whole`` exists: if this fails, aiokafka closes the connection itself
    now, and ``start_whole`` can go."""
    producer = _client(make_settings, f"127.0.0.1:{proxy.port}", "producer")
    reported = await _cancel_mid_bootstrap(proxy, producer.start)
    await producer.stop()
    assert [m for m in reported if "Unclosed AIOKafkaConnection" in m], reported
