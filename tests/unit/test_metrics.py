"""/metrics as served: the worker's metrics, without the ``*_created`` series."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import prometheus_client
import pytest

from worker import metrics
from worker.health import Health
from worker.http import serve


@pytest.fixture
def created_series_restored() -> Iterator[None]:
    yield
    prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]


@pytest.mark.usefixtures("created_series_restored")
async def test_metrics_have_no_created_series() -> None:
    # the library's default, whatever an earlier test in this process did
    prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]
    metrics.OUTCOMES.labels(status="200", change="created", replay="false").inc()
    metrics.EVENT_SECONDS.observe(0.01)
    runner = await serve(Health(60.0), "127.0.0.1", 0)
    try:
        host, port = runner.addresses[0][:2]
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/metrics") as response,
        ):
            text = await response.text()
    finally:
        await runner.cleanup()
    assert "ocitag_outcomes_total{" in text
    assert "ocitag_event_processing_seconds_count" in text
    assert "_created" not in text
