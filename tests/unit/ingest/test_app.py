"""``ocitag-worker ingest`` start-up: which kinds are served, what a bad setting says, and
that it starts and answers with no Kafka reachable at all."""

from __future__ import annotations

import json
import os

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.helpers.cli import run_cli
from tests.helpers.ingest import load_delivery, running_ingest
from tests.helpers.metrics import expected_families, families
from tests.helpers.registry import free_port
from tests.helpers.settings_reads import record_reads
from worker.errors import SettingsError
from worker.ingest.app import enabled_kinds
from worker.settings import COMMAND_SETTINGS, MASK, Settings, load_settings


def test_only_kinds_with_a_secret_are_served() -> None:
    settings = load_settings(
        environ={
            "OCITAG_INGEST_DISTRIBUTION_SECRET": "Bearer a, Bearer b",
            "OCITAG_INGEST_GITHUB_SECRET": "gh",
        }
    )
    kinds = enabled_kinds(settings)
    assert sorted(kinds) == ["distribution", "github"]
    assert kinds["distribution"].secrets == (b"Bearer a", b"Bearer b")


def test_secret_from_a_file(tmp_path: pytest.TempPathFactory) -> None:
    secret = tmp_path / "s"  # type: ignore[operator]
    secret.write_text("Bearer from-file\n")
    settings = load_settings(environ={"OCITAG_INGEST_ZOT_SECRET_FILE": str(secret)})
    assert enabled_kinds(settings)["zot"].secrets == (b"Bearer from-file",)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "set OCITAG_INGEST_RECEIVERS or at least one OCITAG_INGEST_<KIND>_SECRET"),
        ({"OCITAG_INGEST_QUAY_SECRET": " , "}, "OCITAG_INGEST_QUAY_SECRET: holds no secret"),
    ],
)
def test_bad_kind_settings_name_the_setting(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("<", ".").replace(">", ".")):
        enabled_kinds(load_settings(environ=environ))


def test_the_cli_exits_2_naming_the_setting() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCITAG_INGEST_")}
    done = run_cli(["ingest", "--ingest-port", str(free_port())], env, timeout=30)
    assert done.returncode == 2
    assert "OCITAG_INGEST_<KIND>_SECRET" in done.stderr


async def test_starts_and_answers_without_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    probes = free_port()
    settings = load_settings(
        {
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",  # nothing listens
            "ingest_port": free_port(),
            "ingest_host": "127.0.0.1",
            "http_port": probes,
            "http_host": "127.0.0.1",
            "ingest_distribution_secret": "Bearer t",
            "ingest_deadline_seconds": 0.3,
            "log_level": "warning",
        },
        environ={},
    )
    recorded = record_reads(monkeypatch)
    with capture_logs() as lines:
        text = await _deliveries_and_probes(settings, probes)
    assert (
        'ocitag_ingest_deliveries_rejected_total{cause="kafka_unavailable",kind="distribution"}'
        in text
    )
    # ingest's own metrics and the shared ones it moves: no worker or reconcile ones at 0
    shown = {name for name in families(text) if name.startswith("ocitag_")}
    assert shown == expected_families("ingest")
    # what it read is what its flags and start-up line show
    assert recorded.reads <= COMMAND_SETTINGS["ingest"]
    assert {"ingest_port", "ingest_distribution_secret", "input_topic"} <= recorded.reads
    # the start-up line: what differs from the defaults (the rest at debug), ingest's only
    [starting] = [line for line in lines if line["event"] == "starting"]
    named = {name for group in starting["settings"].values() for name in group}
    assert named <= COMMAND_SETTINGS["ingest"]
    assert {"ingest_distribution_secret", "ingest_deadline_seconds"} <= named
    assert "ingest_max_body_bytes" not in named  # left at its default
    assert starting["settings"]["ingest"]["ingest_distribution_secret"] == MASK


async def _deliveries_and_probes(settings: Settings, probes: int) -> str:
    """Two deliveries and the probes answered with no Kafka; the /metrics text."""
    push, _ = load_delivery("distribution", "push-tag")
    pull, _ = load_delivery("distribution", "pull")
    async with running_ingest(settings, kafka=False) as url, aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer t"}
        async with http.post(f"{url}/webhooks/distribution", data=push, headers=headers) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "5"
        async with http.post(f"{url}/webhooks/distribution", data=pull, headers=headers) as r:
            assert r.status == 200
            assert json.loads(await r.read())["ignored"] == [{"entry": 0, "reason": "pull"}]
        async with http.get(f"http://127.0.0.1:{probes}/readyz") as r:
            ready = await r.json()
            assert r.status == 200 and "kafka not connected" in ready["reason"]
        async with http.get(f"http://127.0.0.1:{probes}/healthz") as r:
            assert r.status == 200
        async with http.get(f"http://127.0.0.1:{probes}/metrics") as r:
            return await r.text()
