"""The command line on real services: start-up errors name the setting, migrate,
publish → run → outcomes, SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.helpers.cli import EXE, env_for, last_line, run_cli, stopped_by_sigterm
from tests.helpers.events import HEX
from tests.helpers.registry import free_port
from tests.helpers.services import Services, with_database, with_login
from tests.helpers.wait import eventually
from worker.kafka import ensure_topics, missing_topics
from worker.migrate import available, expected_version, migrate
from worker.settings import Settings

pytestmark = pytest.mark.integration


def test_invalid_setting_exits_2_with_one_line(make_settings: Callable[..., Settings]) -> None:
    result = run_cli(["run"], env_for(make_settings(), OCITAG_HTTP_PORT="99999"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ocitag-worker: invalid setting OCITAG_HTTP_PORT (--http-port): must be 65535 or less "
        "(got '99999')"
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


BAD_PASSWORD = "hunter2-not-the-password"
#: every command that logs in to PostgreSQL, and the name its refusal gives it
LOGGING_IN = [
    (["api"], "api"),
    (["run"], "worker"),
    (["migrate"], "migration"),
    (["reconcile", "--registry", "registry.example", "--dry-run"], "reconcile"),
]


def refused_login(
    make_settings: Callable[..., Settings], command: list[str], component: str, url: str
) -> str:
    """Run ``command`` with a DATABASE_URL whose login PostgreSQL refuses: it stops at
    once (exit 1) naming itself and DATABASE_URL, never sends the reader to
    ``ocitag-worker migrate`` nor prints the password. Its last line."""
    env = env_for(
        make_settings(),
        DATABASE_URL=url,
        OCITAG_API_PORT="0",
        OCITAG_API_TOKENS="me:a-token-of-16-chars",
        OCITAG_STARTUP_TIMEOUT_SECONDS="60",
    )
    started = time.monotonic()
    result = run_cli(command, env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert time.monotonic() - started < 30  # refused at once, not waited out
    line = last_line(result.stderr)
    assert line.startswith(f"ocitag-worker: PostgreSQL refused the {component}: "), line
    assert "DATABASE_URL" in line, line
    assert "migrate`" not in line, line
    password = urlsplit(url).password
    assert password and password not in result.stderr + result.stdout
    return line


@pytest.mark.parametrize(("command", "component"), LOGGING_IN)
def test_a_wrong_password_is_named_as_such(
    make_settings: Callable[..., Settings],
    password_database: str,
    command: list[str],
    component: str,
) -> None:
    """On a server that checks passwords (a private one: the shared stack trusts local
    logins and would let any password in)."""
    url = with_login(password_database, "postgres", BAD_PASSWORD)
    line = refused_login(make_settings, command, component, url)
    assert 'password authentication failed for user "postgres" (SQLSTATE 28P01)' in line, line
    assert line.endswith("check the user name and password in DATABASE_URL"), line
    assert str(urlsplit(password_database).password) not in line


@pytest.mark.parametrize(("command", "component"), LOGGING_IN)
def test_a_missing_role_is_named_as_such(
    make_settings: Callable[..., Settings], services: Services, command: list[str], component: str
) -> None:
    """A role that does not exist, with a password: 28000 on a server that trusts local
    logins (the local stack), 28P01 on one that checks passwords (which does not tell a
    missing role from a wrong password)."""
    url = with_login(services.database_url, "no_such_role", BAD_PASSWORD)
    line = refused_login(make_settings, command, component, url)
    assert "(SQLSTATE 28" in line and "user name" in line, line


async def test_ingest_does_not_use_the_database(
    make_settings: Callable[..., Settings], services: Services
) -> None:
    """Ingest publishes to Kafka only: a DATABASE_URL it could not log in with changes
    nothing (it serves and stops cleanly), and its password is never printed."""
    port = free_port()
    env = env_for(
        make_settings(),
        DATABASE_URL=with_login(services.database_url, "no_such_role", BAD_PASSWORD),
        OCITAG_INGEST_PORT=str(port),
        OCITAG_INGEST_DISTRIBUTION_SECRET="Bearer t0",
    )
    returncode, stdout, stderr = await stopped_by_sigterm("ingest", env, port)
    assert returncode == 0, stderr[-3000:]
    assert "PostgreSQL" not in stderr
    assert BAD_PASSWORD not in stdout + stderr


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
            f"schema is at version 0, this build needs {expected_version()}: run "
            "`ocitag-worker migrate`" in last_line(result.stderr)
        )
        migrated = run_cli(["migrate"], env)
        assert migrated.returncode == 0 and "0001_initial" in migrated.stdout
        assert "0002_tombstones" in migrated.stdout
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


async def test_migrating_a_populated_database_keeps_its_tags_live(services: Services) -> None:
    """0002 (tombstones) on a database that has records from 0001: they stay live, whole
    OCITags, and the worker's tables take deletions afterwards."""
    admin = await asyncpg.connect(with_database(services.database_url, "postgres"))
    name = f"upgrade_{os.getpid()}_{int(time.time())}"
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        conn = await asyncpg.connect(with_database(services.database_url, name))
        try:
            first, *_ = available()
            await conn.execute(first.sql)
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                first.version,
                first.name,
                first.checksum,
            )
            await conn.execute(
                "INSERT INTO ocitags VALUES ('docker.io/a/b', '1', $1, 'alice', now(), 'alice',"
                " now(), 3, 's', 'e')",
                HEX,
            )
            done = await migrate(conn)
            assert [m.name for m in done] == [m.name for m in available()[1:]]
            row = await conn.fetchrow("SELECT * FROM live_ocitags")
            assert row is not None and (row["artifact"], row["version"]) == (HEX, 3)
            stored = await conn.fetchrow("SELECT deleted_on, deleted_by, recorded_at FROM ocitags")
            assert stored is not None and stored["deleted_on"] is None
            assert stored["deleted_by"] is None and stored["recorded_at"] is not None
            # a live row must stay a whole OCITag; a tombstone may lack one
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute("UPDATE ocitags SET artifact = NULL")
            await conn.execute(
                "INSERT INTO ocitags (repository, tag, last_modified_by, last_modified_on, "
                "version, last_event_source, last_event_id, deleted_on, deleted_by) "
                "VALUES ('docker.io/a/b', '2', 'bob', now(), 0, 's', 'd', now(), 'bob')"
            )
            assert await conn.fetchval("SELECT count(*) FROM live_ocitags") == 1
        finally:
            await conn.close()
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
                settings, [settings.topics.input_topic, settings.topics.outcome_topic]
            )

        await eventually(topics_made, timeout=60)
        published = run_cli(
            ["publish", "docker.io/istio/pilot:1.3.0", "sha256:" + HEX, "--actor", "alice"], env
        )
        assert published.returncode == 0, published.stderr
        assert f"to {settings.topics.input_topic}[" in published.stdout
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
        # deletions: of a live tag (200 removed) and of one never seen (404, binary mode)
        for args in (
            ["--delete", "docker.io/istio/pilot:1.3.0", "--actor", "bob"],
            ["--delete", "nginx:never", "--mode", "binary"],
        ):
            result = run_cli(["publish", *args], env)
            assert result.returncode == 0, result.stderr
        shown = run_cli(
            ["outcomes", "--from-beginning", "--count", "5", "--idle-timeout", "30"],
            env,
            timeout=90,
        )
        assert shown.returncode == 0, shown.stderr
        every = [json.loads(line) for line in shown.stdout.splitlines()]  # partitions interleave
        (removed,) = (o for o in every if o["type"] == "ocitag.removed.v1")
        (not_found,) = (o for o in every if o["status"] == 404)
        assert (removed["type"], removed["change"], removed["resourceversion"]) == (
            "ocitag.removed.v1",
            "deleted",
            2,
        )
        assert removed["data"]["created_by"] == "alice"  # the record as it was
        assert (not_found["status"], not_found["subject"]) == (404, "docker.io/library/nginx:never")
        conn = await asyncpg.connect(database_url)
        count = await conn.fetchval("SELECT count(*) FROM ocitags")
        live = await conn.fetchval("SELECT count(*) FROM live_ocitags")
        await conn.close()
        assert (count, live) == (3, 1)  # two tombstones, one live tag
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=settings.lifecycle.shutdown_grace_seconds + 10) == 0
        _, stderr = worker.communicate()
        lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        assert any(line["event"] == "stopping" and line["signal"] == "SIGTERM" for line in lines)
        assert lines[-1]["event"] == "stopped"
        canonical = [line for line in lines if line["event"] == "event"]
        assert len(canonical) == 5
        assert {line["change"] for line in canonical} >= {"created", "deleted"}
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--delete", "docker.io/a/b:1", "sha256:" + HEX], "a deletion has no ARTIFACT"),
        (["--delete"], "publish needs OCITAG_ID ARTIFACT, --delete OCITAG_ID, or --file"),
        (["--delete", "docker.io/a/b"], "OCITag ID"),
    ],
)
def test_publish_delete_usage_errors(
    make_settings: Callable[..., Settings], args: list[str], message: str
) -> None:
    result = run_cli(["publish", *args], env_for(make_settings()))
    assert result.returncode == 2, result.stderr
    assert message in last_line(result.stderr)


def test_publish_to_a_missing_topic_says_which(make_settings: Callable[..., Settings]) -> None:
    env = env_for(make_settings(), OCITAG_INPUT_TOPIC="no.such.topic")
    result = run_cli(["publish", "docker.io/istio/pilot:1.3.0", "sha256:" + HEX], env)
    assert result.returncode == 1
    assert last_line(result.stderr).startswith("ocitag-worker: topic no.such.topic does not exist")


@pytest.mark.parametrize(
    ("command", "port_setting", "extra", "last_event"),
    [
        (
            "ingest",
            "OCITAG_INGEST_PORT",
            {"OCITAG_INGEST_DISTRIBUTION_SECRET": "Bearer t0"},
            "stopped",
        ),
        ("api", "OCITAG_API_PORT", {"OCITAG_API_TOKENS": "me:a-token-of-16-chars"}, "api_stopped"),
    ],
)
async def test_ingest_and_api_exit_0_on_sigterm(
    make_settings: Callable[..., Settings],
    command: str,
    port_setting: str,
    extra: dict[str, str],
    last_event: str,
) -> None:
    """A clean stop is exit 0 for every long-running command (ingest once fell through
    to the ``outcomes`` command after stopping and exited 1 with a traceback)."""
    port = free_port()
    env = env_for(make_settings(), **{port_setting: str(port)}, **extra)
    returncode, _, stderr = await stopped_by_sigterm(command, env, port)
    assert returncode == 0, stderr[-3000:]
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(line["event"] == "stopping" and line["signal"] == "SIGTERM" for line in lines)
    assert lines[-1]["event"] == last_event
    assert "Traceback" not in stderr


async def test_outcomes_says_when_it_follows_and_stops_at_ctrl_c(
    make_settings: Callable[..., Settings],
) -> None:
    """A person at a terminal is told when to send, and Ctrl-C is a clean stop (exit 0,
    not 130 and a traceback)."""
    settings = make_settings()
    await ensure_topics(settings, [settings.topics.outcome_topic])
    process = subprocess.Popen(
        [*EXE, "outcomes"],
        env=env_for(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        following = await asyncio.wait_for(asyncio.to_thread(process.stderr.readline), 60)
        assert json.loads(following)["event"] == "following", following
        process.send_signal(signal.SIGINT)
        await asyncio.to_thread(process.wait, 30)
    finally:
        if process.poll() is None:
            process.kill()
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
