"""The command line on real services: start-up errors name the setting, migrate,
publish → run → outcomes, SIGTERM exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from tests.helpers.cli import EXE, env_for, last_line, run_cli
from tests.helpers.events import HEX
from tests.helpers.services import Services, with_database
from tests.helpers.wait import eventually
from worker.kafka import missing_topics
from worker.migrate import expected_version
from worker.settings import Settings

pytestmark = pytest.mark.integration


def test_invalid_setting_exits_2_with_one_line(make_settings: Callable[..., Settings]) -> None:
    result = run_cli(["run"], env_for(make_settings(), OCITAG_HTTP_PORT="99999"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ocitag-worker: invalid setting OCITAG_HTTP_PORT (--http-port): Input should be less "
        "than or equal to 65535 (got '99999')"
    )


def test_unreachable_database_names_database_url(make_settings: Callable[..., Settings]) -> None:
    env = env_for(
        make_settings(),
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/ocitags",
        OCITAG_STARTUP_TIMEOUT_SECONDS="2",
    )
    result = run_cli(["run"], env)
    assert result.returncode == 1
    line = last_line(result.stderr)
    assert line.startswith("ocitag-worker: PostgreSQL at DATABASE_URL did not answer within 2 s"), (
        line
    )
    assert "waiting_for_service" in result.stderr  # it said why it was waiting


def test_missing_database_fails_at_once(
    make_settings: Callable[..., Settings], services: Services
) -> None:
    url = with_database(services.database_url, "no_such_database")
    started = time.monotonic()
    result = run_cli(["run"], env_for(make_settings(), DATABASE_URL=url))
    assert result.returncode == 1
    assert "DATABASE_URL" in last_line(result.stderr) and "does not exist" in last_line(
        result.stderr
    )
    assert time.monotonic() - started < 15


def test_unreachable_broker_names_kafka_bootstrap_servers(
    make_settings: Callable[..., Settings],
) -> None:
    env = env_for(
        make_settings(), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", OCITAG_STARTUP_TIMEOUT_SECONDS="3"
    )
    result = run_cli(["run"], env)
    assert result.returncode == 1
    assert last_line(result.stderr).startswith(
        "ocitag-worker: Kafka at KAFKA_BOOTSTRAP_SERVERS did not answer within 3 s"
    ), result.stderr[-500:]


async def test_run_refuses_an_unmigrated_or_newer_schema(
    make_settings: Callable[..., Settings], services: Services
) -> None:
    admin = await asyncpg.connect(with_database(services.database_url, "postgres"))
    name = f"blank_{os.getpid()}_{int(time.time())}"
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        url = with_database(services.database_url, name)
        env = env_for(make_settings(), DATABASE_URL=url)
        result = run_cli(["run"], env)
        assert result.returncode == 1
        assert (
            f"schema is at version 0, this build needs {expected_version()}: "
            "run `ocitag-worker migrate`" in last_line(result.stderr)
        )
        migrated = run_cli(["migrate"], env)
        assert migrated.returncode == 0 and "0001_initial" in migrated.stdout
        again = run_cli(["migrate"], env)
        assert again.returncode == 0 and "up to date" in again.stdout
        conn = await asyncpg.connect(url)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (99, 'future', 'x')"
        )
        await conn.close()
        newer = run_cli(["run"], env)
        assert newer.returncode == 1
        assert "newer than this build knows" in last_line(newer.stderr)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_publish_run_outcomes_and_sigterm(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    settings = make_settings()
    env = env_for(settings)
    worker = subprocess.Popen(
        [*EXE, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:

        async def topics_made() -> bool:  # the worker creates its topics at start
            return not await missing_topics(
                settings, [settings.input_topic, settings.outcome_topic]
            )

        await eventually(topics_made, timeout=60)
        published = run_cli(
            ["publish", "docker.io/istio/pilot:1.3.0", "sha256:" + HEX, "--actor", "alice"], env
        )
        assert published.returncode == 0, published.stderr
        assert f"to {settings.input_topic}[" in published.stdout
        events = tmp_path / "events.ndjson"
        events.write_text(
            json.dumps({"repository": "nginx", "tag": "1.27", "artifact": HEX})
            + "\n"
            + json.dumps({"repository": "nginx", "tag": "bad tag", "artifact": HEX})
            + "\n"
        )
        from_file = run_cli(["publish", "--file", str(events), "--mode", "binary"], env)
        assert from_file.returncode == 0, from_file.stderr
        shown = run_cli(
            ["outcomes", "--from-beginning", "--count", "3", "--idle-timeout", "30"],
            env,
            timeout=90,
        )
        assert shown.returncode == 0, shown.stderr
        outcomes = {
            json.loads(line).get("subject"): json.loads(line) for line in shown.stdout.splitlines()
        }
        first = outcomes["docker.io/istio/pilot:1.3.0"]
        assert (first["status"], first["data"]["artifact"], first["data"]["created_by"]) == (
            200,
            HEX,
            "alice",
        )
        assert outcomes["docker.io/library/nginx:1.27"]["status"] == 200
        assert [o["status"] for o in outcomes.values()].count(422) == 1
        conn = await asyncpg.connect(database_url)
        count = await conn.fetchval("SELECT count(*) FROM ocitags")
        await conn.close()
        assert count == 2
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=settings.shutdown_grace_seconds + 10) == 0
        _, stderr = worker.communicate()
        lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        assert any(line["event"] == "stopping" and line["signal"] == "SIGTERM" for line in lines)
        assert lines[-1]["event"] == "stopped"
        canonical = [line for line in lines if line["event"] == "event"]
        assert len(canonical) == 3
        assert {
            "event_id",
            "ocitag_id",
            "topic",
            "partition",
            "offset",
            "status",
            "change",
            "duration_ms",
        } <= canonical[0].keys()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_outcomes_is_readable_on_a_terminal() -> None:
    from worker.watch import describe

    line = describe(
        {
            "status": 200,
            "change": "created",
            "subject": "docker.io/a/b:1",
            "resourceversion": 1,
            "causationid": "e1",
            "data": {"artifact": HEX, "last_modified_by": "alice"},
        }
    )
    assert line == f"200 created docker.io/a/b:1 -> {HEX} v1 by alice (event e1)"
    problem = describe(
        {
            "status": 422,
            "causationid": "e2",
            "data": {
                "type": "https://x/problems/invalid-data",
                "detail": "bad",
                "errors": [{"location": "body.data.tag", "message": "must match"}],
            },
        }
    )
    assert problem == "422 invalid-data -: bad (event e2)\n    body.data.tag: must match"


def test_publish_to_a_missing_topic_says_which(make_settings: Callable[..., Settings]) -> None:
    env = env_for(make_settings(), OCITAG_INPUT_TOPIC="no.such.topic")
    result = run_cli(["publish", "docker.io/istio/pilot:1.3.0", "sha256:" + HEX], env)
    assert result.returncode == 1
    assert last_line(result.stderr).startswith("ocitag-worker: topic no.such.topic does not exist")
