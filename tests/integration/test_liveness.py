"""Each long-running command's /healthz stays 200 while it idles, over more than twice
OCITAG_LIVENESS_TIMEOUT_SECONDS, and names the parts it watches: the worker its poll
loop, ingest its HTTP loop, the api its HTTP loop and its outcome listener (also while
that listener waits for an unreachable Kafka: waiting for a service is alive)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers.api import api_overrides, running_api
from tests.helpers.harness import running_worker
from tests.helpers.ingest import running_ingest
from tests.helpers.probes import answering, answers_over
from tests.helpers.registry import free_port
from tests.helpers.wait import eventually
from worker.settings import Settings

pytestmark = pytest.mark.integration

TIMEOUT = 2.0
WATCH = 2.5 * TIMEOUT


def probed(make_settings: Callable[..., Settings], **extra: Any) -> Settings:
    return make_settings(
        http_port=free_port(), http_host="127.0.0.1", liveness_timeout_seconds=TIMEOUT, **extra
    )


async def stays_live(port: int) -> str:
    """The last reason, once /healthz has answered 200 throughout WATCH seconds."""
    answers = await answers_over(port, WATCH)
    failed = [body for status, body in answers if status != 200]
    assert not failed, failed[0]
    return str(answers[-1][1]["reason"])


async def test_idle_worker_stays_live(make_settings: Callable[..., Settings]) -> None:
    settings = probed(make_settings)
    async with running_worker(settings):
        await eventually(lambda: answering(settings.probes.http_port, "/readyz"))
        reason = await stays_live(settings.probes.http_port)
    assert "poll-loop" in reason


async def test_idle_ingest_stays_live(make_settings: Callable[..., Settings]) -> None:
    settings = probed(
        make_settings,
        ingest_port=free_port(),
        ingest_host="127.0.0.1",
        ingest_distribution_secret="Bearer t0ken",
    )
    async with running_ingest(settings):
        reason = await stays_live(settings.probes.http_port)
    assert "http" in reason


async def test_idle_api_stays_live(make_settings: Callable[..., Settings]) -> None:
    settings = probed(make_settings, **api_overrides())
    async with running_api(settings):
        reason = await stays_live(settings.probes.http_port)
    assert "http" in reason and "outcome-listener" in reason


async def test_api_waiting_for_kafka_stays_live(make_settings: Callable[..., Settings]) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there: Kafka is away
    settings = probed(make_settings, kafka_bootstrap_servers=nobody, **api_overrides())
    async with running_api(settings, ready=False):
        await eventually(lambda: answering(settings.probes.http_port, "/healthz"))
        reason = await stays_live(settings.probes.http_port)
    assert "outcome-listener waiting for Kafka" in reason
