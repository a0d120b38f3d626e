"""/metrics as served: each command's own metrics and the shared ones that apply to it,
without the ``*_created`` series."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import prometheus_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _samples(histogram: prometheus_client.Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for family in histogram.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


@settings(max_examples=200, deadline=None)
@given(
    amounts=st.lists(
        st.tuples(st.floats(min_value=0, max_value=100, allow_nan=False), st.integers(0, 2_000)),
        max_size=5,
    )
)
def test_observe_many_records_what_as_many_observes_do(amounts: list[tuple[float, int]]) -> None:
    buckets = (0.001, 0.01, 0.1, 1, 10)
    many = prometheus_client.Histogram("many", "", buckets=buckets, registry=None)
    each = prometheus_client.Histogram("each", "", buckets=buckets, registry=None)
    for amount, count in amounts:
        metrics.observe_many(many, amount, count)
        for _ in range(count):
            each.observe(amount)
    got = {(n.removeprefix("many"), le): v for (n, le), v in _samples(many).items()}
    want = {(n.removeprefix("each"), le): v for (n, le), v in _samples(each).items()}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


def test_observe_many_refuses_a_histogram_with_labels_as_observe_does() -> None:
    labelled = prometheus_client.Histogram("labelled", "", ["kind"], registry=None)
    with pytest.raises(ValueError, match="missing label values"):
        labelled.observe(1.0)
    with pytest.raises(ValueError, match="missing label values"):
        metrics.observe_many(labelled, 1.0, 3)
