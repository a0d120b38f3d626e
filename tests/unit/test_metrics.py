"""/metrics as served: each command's own metrics and the shared ones that apply to it,
without the ``*_created`` series."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import prometheus_client
import pytest

from tests.helpers.metrics import COMPONENT_FAMILIES, expected_families, families
from worker import metrics
from worker.health import Health
from worker.http import serve


@pytest.fixture
def created_series_restored() -> Iterator[None]:
    yield
    prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]


async def _scrape(command: str) -> str:
    runner = await serve(Health(60.0), "127.0.0.1", 0, command)
    try:
        host, port = runner.addresses[0][:2]
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/metrics") as response,
        ):
            return await response.text()
    finally:
        await runner.cleanup()


@pytest.mark.usefixtures("created_series_restored")
async def test_metrics_have_no_created_series() -> None:
    # the library's default, whatever an earlier test in this process did
    prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]
    metrics.OUTCOMES.labels(status="200", change="created", replay="false").inc()
    metrics.EVENT_SECONDS.observe(0.01)
    text = await _scrape("run")
    assert "ocitag_outcomes_total{" in text
    assert "ocitag_event_processing_seconds_count" in text
    assert "_created" not in text


@pytest.mark.parametrize("command", sorted(COMPONENT_FAMILIES))
async def test_each_command_serves_its_own_metrics_only(command: str) -> None:
    shown = families(await _scrape(command))
    assert {name for name in shown if name.startswith("ocitag_")} == expected_families(command)
    assert {"process_cpu_seconds", "python_gc_collections"} <= shown  # the runtime's


def test_importing_the_metrics_registers_nothing() -> None:
    """The default registry (which any library may scrape) holds no metric of ours."""
    shown = {family.name for family in prometheus_client.REGISTRY.collect()}
    assert not [name for name in shown if name.startswith("ocitag_")]


def test_every_metric_is_some_commands() -> None:
    """A metric no command registers would be moved and never shown."""
    defined = {
        value
        for value in vars(metrics).values()
        if isinstance(value, prometheus_client.metrics.MetricWrapperBase)
    }
    registered = {c for collectors in metrics.COMMANDS.values() for c in collectors}
    assert defined == registered
