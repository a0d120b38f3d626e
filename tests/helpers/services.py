"""Finding real Kafka and PostgreSQL for the integration tests, in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` from the environment;
2. testcontainers, where a Docker engine answers;
3. the project's local stack (``deploy/local/stack up``), started for the session.

Locally a missing service skips the integration tests; under ``CI=true`` it fails them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
STACK = REPO / "deploy" / "local" / "stack"


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    database_url: str  # a database the tests may create other databases from
    origin: str  # "environment", "testcontainers" or "local stack"
    sasl_bootstrap: str | None = None  # the local stack's SASL/SCRAM listener
    ssl_bootstrap: str | None = None  # its TLS listener (mutual TLS optional)
    sasl_ssl_bootstrap: str | None = None  # its SASL/SCRAM over TLS listener
    tls_dir: Path | None = None  # ca.pem (verifies Kafka and PostgreSQL), client.pem/.key

    @property
    def can_restart(self) -> bool:
        """Only the local stack can be stopped and started by the fault tests."""
        return self.origin == "local stack"


def skip_or_fail(message: str) -> NoReturn:
    """A test that cannot run here: skipped locally, failed under ``CI=true``."""
    import pytest

    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


class UnavailableError(Exception):
    """No way to get the services; the message says what was tried."""


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def _from_testcontainers(stack: ExitStack) -> Services:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    kafka = stack.enter_context(KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft())
    postgres = stack.enter_context(PostgresContainer("postgres:15", driver=None))
    return Services(kafka.get_bootstrap_server(), postgres.get_connection_url(), "testcontainers")


def _from_local_stack() -> Services:
    if not STACK.exists():
        raise UnavailableError(f"{STACK} is missing")
    up = subprocess.run([str(STACK), "up"], capture_output=True, text=True, check=False)
    if up.returncode != 0:
        raise UnavailableError(f"deploy/local/stack up failed:\n{up.stdout}\n{up.stderr}")
    env = subprocess.run([str(STACK), "env"], capture_output=True, text=True, check=True).stdout
    values = {}
    for line in env.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0] if value else ""
    return Services(
        values["KAFKA_BOOTSTRAP_SERVERS"],
        values["DATABASE_URL"],
        "local stack",
        **_security(values),
    )


def _security(values: Mapping[str, str]) -> dict[str, Any]:
    """The secured listeners and the certificates, from the stack's ``env`` output or the
    environment (the same names)."""
    tls_dir = values.get("OCITAG_STACK_TLS_DIR")
    return {
        "sasl_bootstrap": values.get("OCITAG_KAFKA_SASL_BOOTSTRAP") or None,
        "ssl_bootstrap": values.get("OCITAG_KAFKA_SSL_BOOTSTRAP") or None,
        "sasl_ssl_bootstrap": values.get("OCITAG_KAFKA_SASL_SSL_BOOTSTRAP") or None,
        "tls_dir": Path(tls_dir) if tls_dir else None,
    }


def discover(stack: ExitStack) -> Services:
    kafka, database = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("DATABASE_URL")
    if kafka and database:
        return Services(kafka, database, "environment", **_security(os.environ))
    if _docker_answers():
        return _from_testcontainers(stack)
    return _from_local_stack()


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def with_login(url: str, user: str, password: str) -> str:
    """``url`` logging in as ``user`` with ``password`` instead."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))
