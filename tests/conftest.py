"""Shared fixtures. Integration tests get real services (tests/helpers/services.py), each test
its own database (cloned from a migrated template) and its own topics."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.helpers.clients import ClientUnavailableError, curl_path, kafka_libs, kcat_path
from tests.helpers.jaeger import JaegerUnavailableError, start_jaeger
from tests.helpers.postgres import PostgresUnavailableError, password_postgres, server_binaries
from tests.helpers.registry import ToolsUnavailableError, tools_dir
from tests.helpers.services import IN_CI, Services, UnavailableError, discover, with_database
from worker.db import PooledConnection, reset_connection
from worker.migrate import available, migrate
from worker.settings import Settings, load_settings

# Named after the migrations it holds: test runs of branches with other migrations share
# the server (the team's local stack) and must not clone each other's template (a
# clone of a newer schema refuses to run: "newer than this build knows").
TEMPLATE_DB = (
    "ocitag_test_template_"
    + hashlib.sha256("".join(m.checksum for m in available()).encode()).hexdigest()[:10]
)
pytest_plugins = ["pytester"]  # tests of the test helpers (tests/unit/test_processlogs.py)
T = TypeVar("T")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Logging is global state: a test that configures it (``worker.logs.configure``,
    directly or through ``worker.cli.main``) binds it to that test's captured stream,
    which pytest closes after the test; the next test logging a warning would write to
    a closed file. Every test starts from structlog's defaults and the root logger as
    it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    if structlog.is_configured():
        structlog.reset_defaults()
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"integration services unavailable under CI=true: {reason}")
    pytest.skip(f"integration services unavailable: {reason}")


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    with ExitStack() as stack:
        try:
            found = discover(stack)
        except UnavailableError as exc:
            _unavailable(str(exc))
        yield found


def _required(find: Callable[[], T], *unavailable: type[Exception]) -> T:
    """What ``find`` finds; a skip (a failure under CI=true) when it raises one of
    ``unavailable``."""
    try:
        return find()
    except unavailable as exc:
        _unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def registry_tools() -> Path:
    """The real OCI registry, crane and oras (built once: ``stack tools --clients``)."""
    return _required(tools_dir, ToolsUnavailableError)


@pytest.fixture(scope="session")
def jaeger(registry_tools: Path) -> str:
    """Jaeger all-in-one, in memory (built on first use, ``tools --jaeger``): its query URL."""
    return _required(start_jaeger, JaegerUnavailableError)


@pytest.fixture(scope="session")
def password_database() -> Iterator[str]:
    """The URL (with its password) of a private PostgreSQL that checks passwords."""
    _required(server_binaries, PostgresUnavailableError)
    with password_postgres(f"pw-{uuid.uuid4().hex}") as url:
        yield url


@pytest.fixture(scope="session")
def kcat() -> str:
    """kcat (librdkafka's command-line client)."""
    return _required(kcat_path, ClientUnavailableError)


@pytest.fixture(scope="session")
def curl() -> str:
    """curl, the api's real HTTP client."""
    return _required(curl_path, ClientUnavailableError)


@pytest.fixture(scope="session")
def kafka_console() -> Path:
    """The jars of Kafka's Java console tools."""
    return _required(kafka_libs, ClientUnavailableError)


@pytest.fixture(scope="session")
async def template_db(services: Services) -> str:
    """A migrated database that every test's database is cloned from."""
    admin = await asyncpg.connect(with_database(services.database_url, "postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(services.database_url, TEMPLATE_DB))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return TEMPLATE_DB


@pytest.fixture
async def database_url(services: Services, template_db: str) -> AsyncIterator[str]:
    name = f"ocitag_test_{uuid.uuid4().hex[:12]}"
    admin_url = with_database(services.database_url, "postgres")
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await admin.close()
    yield with_database(services.database_url, name)
    # a new connection: the test may have restarted the server meanwhile
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    # the worker's connection class and reset (worker/db.py): the store's tests run its
    # connections as the worker does, returned without the reset query after an apply
    pool = await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=12,
        connection_class=PooledConnection,
        reset=reset_connection,
    )
    try:
        yield pool
    finally:
        await pool.close()


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_settings(
    services: Services, database_url: str, topic_prefix: str
) -> Callable[..., Settings]:
    """Settings for a worker on this test's database and topics; keywords override."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": services.kafka_bootstrap,
            "database_url": database_url,
            "input_topic": f"{topic_prefix}.events",
            "outcome_topic": f"{topic_prefix}.outcomes",
            "dlq_topic": f"{topic_prefix}.events.dlq",
            "state_topic": f"{topic_prefix}.state",
            "group_id": f"{topic_prefix}-group",
            "http_port": 0,
            "topic_partitions": 3,
            "topic_replication_factor": 1,
            "startup_timeout_seconds": 20,
            "poll_timeout_ms": 50,
            "retry_backoff_initial_seconds": 0.05,
            "retry_backoff_max_seconds": 1.0,
            "session_timeout_ms": 6_000,
            "heartbeat_interval_ms": 1_000,
            "log_level": "warning",
        }
        values.update(overrides)
        return load_settings(values, environ={})

    return build
