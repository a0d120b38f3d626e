"""Kafka SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and TLS, PostgreSQL TLS, against the
local stack's real listeners and credentials."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError

from tests.helpers.cli import env_for, last_line, run_cli
from tests.helpers.events import event
from tests.helpers.harness import running_worker, structured
from tests.helpers.services import IN_CI, Services, skip_or_fail
from worker.kafka import check_connection
from worker.settings import Settings

pytestmark = pytest.mark.integration

USER, PASSWORD = "ocitag", "ocitag-secret"


def refused_at_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the worker with a start-up timeout of 60 s and check it stopped on the first
    refusal instead: exit 1, well within the timeout, without a single retry."""
    started = time.monotonic()
    result = run_cli(["run"], {**env, "OCITAG_STARTUP_TIMEOUT_SECONDS": "60"}, timeout=90)
    assert result.returncode == 1, result.stderr[-500:]
    assert time.monotonic() - started < 20
    assert result.stderr.count("waiting_for_service") == 0
    return result


@pytest.fixture
def sasl_bootstrap(services: Services) -> str:
    if not services.sasl_bootstrap:
        skip_or_fail("no SASL listener known (OCITAG_KAFKA_SASL_BOOTSTRAP, or the local stack)")
    return services.sasl_bootstrap


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
async def test_worker_over_sasl(
    make_settings: Callable[..., Settings], sasl_bootstrap: str, mechanism: str
) -> None:
    settings = make_settings(
        kafka_bootstrap_servers=sasl_bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=USER,
        kafka_sasl_password=PASSWORD,
        topic_partitions=1,
    )
    # the harness's own clients use the plaintext listener of the same broker
    plain = make_settings(topic_partitions=1)
    async with running_worker(settings) as worker:
        worker.settings = plain
        await worker.publish([structured(event(f"sasl-{mechanism}", actor="scram"))])
        (outcome,) = await worker.outcomes(1)
    assert outcome.body["status"] == 200
    assert outcome.body["data"]["created_by"] == "scram"


def test_wrong_credentials_fail_at_once_naming_the_settings(
    make_settings: Callable[..., Settings], sasl_bootstrap: str
) -> None:
    env = env_for(
        make_settings(),
        KAFKA_BOOTSTRAP_SERVERS=sasl_bootstrap,
        OCITAG_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        OCITAG_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        OCITAG_KAFKA_SASL_USERNAME=USER,
        OCITAG_KAFKA_SASL_PASSWORD="wrong-password",
    )
    result = refused_at_once(env)
    line = last_line(result.stderr)
    assert "Kafka refused the worker" in line, line
    assert "OCITAG_KAFKA_SASL" in line, line
    assert "wrong-password" not in result.stderr


# --- TLS: the local stack's SSL and SASL_SSL listeners and PostgreSQL's ssl=on, verified
# against the stack's own CA (deploy/local/stack makes it once, into $CACHE/tls)


@dataclass(frozen=True)
class Tls:
    ssl_bootstrap: str
    sasl_ssl_bootstrap: str
    ca: Path
    client_cert: Path
    client_key: Path


def _missing(message: str) -> NoReturn:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _answers(server: str) -> bool:
    host, _, port = server.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError:
        return False
    return True


def _tls_dir(services: Services) -> Path:
    if services.tls_dir is None:
        _missing("no certificates known (OCITAG_STACK_TLS_DIR, or the local stack)")
    return services.tls_dir


@pytest.fixture
def tls(services: Services) -> Tls:
    if not (services.ssl_bootstrap and services.sasl_ssl_bootstrap):
        _missing(
            "no TLS listeners known (OCITAG_KAFKA_SSL_BOOTSTRAP and "
            "OCITAG_KAFKA_SASL_SSL_BOOTSTRAP, or the local stack)"
        )
    tls_dir = _tls_dir(services)
    found = Tls(
        services.ssl_bootstrap,
        services.sasl_ssl_bootstrap,
        tls_dir / "ca.pem",
        tls_dir / "client.pem",
        tls_dir / "client.key",
    )
    for server in (found.ssl_bootstrap, found.sasl_ssl_bootstrap):
        if not _answers(server):
            _missing(
                f"nothing answers on {server}: a stack started before its TLS listeners "
                "existed gets them with 'deploy/local/stack down' then 'up'"
            )
    for path in (found.ca, found.client_cert, found.client_key):
        if not path.is_file():
            _missing(f"{path} is missing (OCITAG_STACK_TLS_DIR)")
    return found


def throwaway_ca(directory: Path, client: bool = False) -> Path:
    """A CA of nobody's (and, with ``client``, a client certificate it signed)."""
    if shutil.which("openssl") is None:
        _missing("openssl is not installed")
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    openssl(
        "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=nobody's CA"
    )
    if client:
        csr = directory / "client.csr"
        openssl(
            "req",
            "-new",
            *ec,
            "-keyout",
            directory / "client.key",
            "-out",
            csr,
            "-subj",
            "/CN=intruder",
        )
        openssl(
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-set_serial",
            "7",
            "-days",
            "2",
            "-out",
            directory / "client.pem",
        )
    return ca


async def test_worker_over_tls(make_settings: Callable[..., Settings], tls: Tls) -> None:
    settings = make_settings(
        kafka_bootstrap_servers=tls.ssl_bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tls.ca,
        topic_partitions=1,
    )
    plain = make_settings(topic_partitions=1)
    async with running_worker(settings) as worker:
        worker.settings = plain
        await worker.publish([structured(event("tls-one-way", actor="tls"))])
        (outcome,) = await worker.outcomes(1)
    assert outcome.body["status"] == 200
    assert outcome.body["data"]["created_by"] == "tls"


async def test_worker_over_mutual_tls(
    make_settings: Callable[..., Settings], tls: Tls, tmp_path: Path
) -> None:
    settings = make_settings(
        kafka_bootstrap_servers=tls.ssl_bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tls.ca,
        kafka_ssl_certfile=tls.client_cert,
        kafka_ssl_keyfile=tls.client_key,
        topic_partitions=1,
    )
    plain = make_settings(topic_partitions=1)
    async with running_worker(settings) as worker:
        worker.settings = plain
        await worker.publish([structured(event("tls-mutual", actor="mtls"))])
        (outcome,) = await worker.outcomes(1)
    assert outcome.body["status"] == 200
    assert outcome.body["data"]["created_by"] == "mtls"
    # The broker asks for a client certificate and verifies one that is presented: a
    # certificate from another CA is refused, so the one above was sent and accepted.
    throwaway_ca(tmp_path / "other", client=True)
    intruder = make_settings(
        kafka_bootstrap_servers=tls.ssl_bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tls.ca,
        kafka_ssl_certfile=tmp_path / "other" / "client.pem",
        kafka_ssl_keyfile=tmp_path / "other" / "client.key",
    )
    with pytest.raises(KafkaConnectionError):
        await check_connection(intruder)


async def test_worker_over_sasl_ssl(make_settings: Callable[..., Settings], tls: Tls) -> None:
    settings = make_settings(
        kafka_bootstrap_servers=tls.sasl_ssl_bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=tls.ca,
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password=PASSWORD,
        topic_partitions=1,
    )
    plain = make_settings(topic_partitions=1)
    async with running_worker(settings) as worker:
        worker.settings = plain
        await worker.publish([structured(event("sasl-ssl", actor="scram-tls"))])
        (outcome,) = await worker.outcomes(1)
    assert outcome.body["status"] == 200
    assert outcome.body["data"]["created_by"] == "scram-tls"


def test_wrong_kafka_ca_fails_at_once_naming_the_settings(
    make_settings: Callable[..., Settings], tls: Tls, tmp_path: Path
) -> None:
    env = env_for(
        make_settings(),
        KAFKA_BOOTSTRAP_SERVERS=tls.ssl_bootstrap,
        OCITAG_KAFKA_SECURITY_PROTOCOL="SSL",
        OCITAG_KAFKA_SSL_CAFILE=str(throwaway_ca(tmp_path)),
    )
    result = refused_at_once(env)
    line = last_line(result.stderr)
    assert "Kafka refused the worker" in line, line
    assert "OCITAG_KAFKA_SSL" in line, line
    assert "CERTIFICATE_VERIFY_FAILED" in line, line


def with_tls(url: str, root_cert: Path) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, f"sslmode=verify-full&sslrootcert={root_cert}") if q)
    return urlunsplit(parts._replace(query=query))


@pytest.fixture
async def postgres_tls(services: Services) -> Path:
    """The CA that verifies PostgreSQL, once its server is known to have ssl on."""
    ca = _tls_dir(services) / "ca.pem"
    if not ca.is_file():
        _missing(f"{ca} is missing (OCITAG_STACK_TLS_DIR)")
    conn = await asyncpg.connect(services.database_url)
    try:
        ssl_on = await conn.fetchval("SHOW ssl")
    finally:
        await conn.close()
    if ssl_on != "on":
        _missing(
            "PostgreSQL runs with ssl=off (a stack started before TLS gets it with "
            "'deploy/local/stack down' then 'up')"
        )
    return ca


async def test_worker_over_postgres_tls(
    make_settings: Callable[..., Settings], database_url: str, postgres_tls: Path
) -> None:
    settings = make_settings(database_url=with_tls(database_url, postgres_tls), topic_partitions=1)
    async with running_worker(settings) as worker:
        await worker.publish([structured(event("pg-tls", actor="pg-tls"))])
        (outcome,) = await worker.outcomes(1)
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                "WHERE a.application_name = 'ocitag-worker' AND a.datname = current_database()"
            )
        finally:
            await conn.close()
    assert outcome.body["status"] == 200
    assert outcome.body["data"]["created_by"] == "pg-tls"
    assert rows, "no connection of the worker in pg_stat_activity"
    assert all(row["ssl"] for row in rows), [dict(row) for row in rows]


def test_migrate_over_postgres_tls(
    make_settings: Callable[..., Settings], database_url: str, postgres_tls: Path
) -> None:
    result = run_cli(
        ["migrate"], env_for(make_settings(), DATABASE_URL=with_tls(database_url, postgres_tls))
    )
    assert result.returncode == 0, result.stderr
    assert "migrations applied" in result.stdout


def test_wrong_postgres_root_cert_fails_at_once_naming_database_url(
    make_settings: Callable[..., Settings], database_url: str, postgres_tls: Path, tmp_path: Path
) -> None:
    env = env_for(
        make_settings(),
        DATABASE_URL=with_tls(database_url, throwaway_ca(tmp_path)),
    )
    result = refused_at_once(env)
    line = last_line(result.stderr)
    assert "DATABASE_URL" in line, line
    assert "CERTIFICATE_VERIFY_FAILED" in line, line
