"""An outage is one state change (worker/outage.py, worker/reachability.py): the Kafka
client's connection failures and the retry paths' outage causes become a line when it
starts and one when it ends, with the gauge ``ocitag_dependency_up``; the client's
retriable broker answers are debug lines; errors name their type once."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import pytest
import structlog
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    NodeNotReadyError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
)

from tests.helpers.wait import eventually
from worker import logs, metrics, reachability
from worker.errors import Cause, TransientError, describe
from worker.kafka import (
    PUBLISHING_OUTCOMES,
    ClientRecord,
    Producer,
    classify_client_record,
    classify_kafka_error,
)
from worker.retry import Backoff, retrying
from worker.settings import load_settings

CONNECT = "Unable connect to node with id %s: %s"
REFUSED = KafkaConnectionError("Connection at 127.0.0.1:19092 closed")


@pytest.fixture(autouse=True)
def fresh_dependencies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own outage state: the process-wide trackers remember what earlier
    tests did to them (an outage ended less than 30 s ago reopens silently)."""
    monkeypatch.setattr(reachability, "KAFKA", reachability.Dependency("kafka"))
    monkeypatch.setattr(reachability, "POSTGRESQL", reachability.Dependency("postgresql"))


def _configured(level: str = "info") -> tuple[io.BytesIO, io.TextIOWrapper]:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    logs.configure(level, "json", stream)  # type: ignore[arg-type]
    return raw, stream


def _lines(raw: io.BytesIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.getvalue().decode().splitlines()]


def _up(dependency: str) -> float:
    return metrics.DEPENDENCY_UP.labels(dependency)._value.get()  # type: ignore[no-any-return]


def test_a_kafka_outage_is_two_lines_however_often_the_client_fails() -> None:
    raw, stream = _configured()
    client = logging.getLogger("aiokafka.client")
    for node in range(300):
        client.error(CONNECT, node % 3, REFUSED)
        client.error("Unable to update metadata from %s", [1])
        logging.getLogger("aiokafka.consumer.fetcher").error(
            "Failed fetch messages from %s: %s", 1, NodeNotReadyError("not ready")
        )
    assert _up("kafka") == 0
    logging.getLogger("aiokafka.cluster").debug("Updated cluster metadata to %s", "cluster")
    stream.flush()

    started, ended = _lines(raw)
    assert (started["event"], started["level"], started["dependency"]) == (
        "outage_started",
        "warning",
        "kafka",
    )
    assert started["error"] == f"Unable connect to node with id 0: {REFUSED}"
    assert (ended["event"], ended["level"], ended["dependency"]) == (
        "outage_ended",
        "info",
        "kafka",
    )
    assert ended["errors"] == 899  # swallowed since the first line
    assert ended["seconds"] >= 0
    assert _up("kafka") == 1


@pytest.mark.parametrize(("level", "shown"), [("info", False), ("debug", True)])
def test_a_coordinator_not_yet_available_is_no_error_line(level: str, shown: bool) -> None:
    """The first start of a group on a fresh cluster: the broker answers
    COORDINATOR_NOT_AVAILABLE while it creates __consumer_offsets, and the client
    retries; a debug line at most."""
    raw, stream = _configured(level)
    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError()
    )
    stream.flush()
    lines = [line for line in _lines(raw) if line.get("logger")]
    assert [line["level"] for line in lines] == (["debug"] if shown else [])


RECORDS = {
    "connection refused": ("aiokafka.client", CONNECT, (1, REFUSED), ClientRecord.UNREACHABLE),
    "bootstrap": (
        "aiokafka.client",
        'Unable connect to "%s:%s": %s',
        ("127.0.0.1", 19092, OSError(111, "Connect call failed")),
        ClientRecord.UNREACHABLE,
    ),
    "timeout": ("aiokafka.client", CONNECT, (1, TimeoutError()), ClientRecord.UNREACHABLE),
    "metadata failed": (
        "aiokafka.client",
        "Unable to update metadata from %s",
        ([1],),
        ClientRecord.UNREACHABLE,
    ),
    "metadata refreshed": (
        "aiokafka.cluster",
        "Updated cluster metadata to %s",
        ("c",),
        ClientRecord.REACHED,
    ),
    "coordinator not available": (
        "aiokafka.consumer.group_coordinator",
        "Group Coordinator Request failed: %s",
        (GroupCoordinatorNotAvailableError(),),
        ClientRecord.TRANSIENT,
    ),
    "the group's coordinator lost": (
        "aiokafka.consumer.group_coordinator",
        "Heartbeat session expired - marking coordinator dead",
        (),
        ClientRecord.TRANSIENT,
    ),
    "a leader moving, as the producer says it": (
        "aiokafka.producer.sender",
        "Got error produce response on topic-partition %s, retrying. Error: %s",
        ("tp", NotLeaderForPartitionError),
        ClientRecord.TRANSIENT,
    ),
    "too few in-sync replicas is news, retriable or not": (
        "aiokafka.producer.sender",
        "Got error produce response on topic-partition %s, retrying. Error: %s",
        ("tp", NotEnoughReplicasError),
        ClientRecord.OTHER,
    ),
    "a topic the broker does not know is news": (
        "aiokafka.consumer.fetcher",
        "Failed fetch messages from %s: %s",
        (1, UnknownTopicOrPartitionError()),
        ClientRecord.OTHER,
    ),
    "a refusal stays an error": (
        "aiokafka.consumer.fetcher",
        "Failed fetch messages from %s: %s",
        (1, TopicAuthorizationFailedError()),
        ClientRecord.OTHER,
    ),
    "not retriable": (
        "aiokafka.consumer.group_coordinator",
        "Failed to commit on finallization: %s",
        (UnknownMemberIdError(),),
        ClientRecord.OTHER,
    ),
    "no error in it": (
        "aiokafka.conn",
        "Sending username and password in the clear",
        (),
        ClientRecord.OTHER,
    ),
    "not the client's": ("asyncpg", CONNECT, (1, REFUSED), ClientRecord.OTHER),
}


@pytest.mark.parametrize(
    ("logger", "template", "args", "kind"), RECORDS.values(), ids=RECORDS.keys()
)
def test_the_clients_records_are_sorted_by_the_error_they_carry(
    logger: str, template: str, args: tuple[object, ...], kind: ClientRecord
) -> None:
    assert classify_client_record(logger, template, args) is kind


async def test_retries_for_a_database_away_are_one_outage() -> None:
    failures = iter([True] * 5 + [False])

    async def work() -> str:
        if next(failures):
            raise TransientError(Cause.DB_CONNECTION, "connection refused")
        return "done"

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    with structlog.testing.capture_logs() as captured:
        assert await retrying(work, Backoff(0.01, 0.01), wait=no_wait) == "done"
    assert [(c["event"], c["dependency"]) for c in captured] == [
        ("outage_started", "postgresql"),
        ("outage_ended", "postgresql"),
    ]
    assert captured[1]["errors"] == 4


async def test_a_producer_whose_last_try_failed_is_not_ready() -> None:
    """It still lists the brokers it knew: that said "kafka connected" during outages."""
    producer = Producer(
        load_settings({}, environ={}), component="the worker", action=PUBLISHING_OUTCOMES
    )
    cluster = producer._producer.client.cluster
    cluster.brokers = lambda: {"broker 1"}
    assert await producer.ready()
    cluster.failed_update(None)
    assert not await producer.ready()


@pytest.mark.parametrize(
    ("refresh", "unknown", "reachable"),
    [
        ("fails", True, False),  # the refresh answered: no broker, whatever the caller says
        ("never ends", True, True),  # a slow handshake is not an outage: the send decides
        ("never ends", False, False),  # a probe that cannot tell says not ready
        ("succeeds", False, True),
    ],
)
async def test_a_producer_whose_last_try_failed_asks_again(
    refresh: str, unknown: bool, reachable: bool
) -> None:
    producer = Producer(load_settings({}, environ={}), component="the worker", action="testing")
    client = producer._producer.client
    cluster = client.cluster
    cluster.brokers = lambda: {"broker 1"}
    cluster.failed_update(None)
    pending: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def force_metadata_update() -> asyncio.Future[bool]:
        if refresh == "fails":
            cluster.failed_update(None)
            pending.set_result(False)
        elif refresh == "succeeds":
            cluster._last_successful_refresh_ms = cluster._last_refresh_ms + 1
            pending.set_result(True)
        return pending

    client.force_metadata_update = force_metadata_update
    assert await producer.reachable(0.05, unknown=unknown) is reachable


def test_aiokafka_keeps_the_refresh_times_the_producer_reads() -> None:
    """worker/kafka.py reads two private fields of the client's cluster metadata."""
    cluster = ClusterMetadata()
    assert cluster._last_refresh_ms == cluster._last_successful_refresh_ms == 0
    cluster.failed_update(None)
    assert cluster._last_refresh_ms > cluster._last_successful_refresh_ms


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (KafkaConnectionError("Unable to bootstrap"), "KafkaConnectionError: Unable to bootstrap"),
        (KafkaConnectionError(), "KafkaConnectionError"),
        (OSError("refused"), "OSError: refused"),
        (TimeoutError(), "TimeoutError"),
    ],
)
def test_errors_name_their_type_once(error: Exception, text: str) -> None:
    assert describe(error) == text
    assert str(classify_kafka_error(error, "connecting")).endswith(f"connecting: {text}")


async def test_an_idle_process_hears_the_end_of_an_outage_from_its_probe() -> None:
    """Nothing of the client says it reconnected: the probe, tried while down, does."""
    dependency = reachability.Dependency("kafka", probe_every=0.01)
    answers = iter([False, False, True])

    async def probe() -> None:
        if not next(answers):
            raise ConnectionRefusedError

    dependency.probe_with(probe)
    with structlog.testing.capture_logs() as captured:
        dependency.failed("Unable connect to node with id 1")
        await eventually(lambda: not dependency.down, 5)
    assert [c["event"] for c in captured] == ["outage_started", "outage_ended"]


def test_the_database_pool_reconnecting_is_part_of_the_outage() -> None:
    raw, stream = _configured()
    for _ in range(3):
        try:
            raise ConnectionRefusedError(111, "Connect call failed")
        except ConnectionRefusedError:
            logging.getLogger("asyncpg.pool").warning(
                "Failed to restore the pool connection floor; retrying", exc_info=True
            )
    stream.flush()
    (started,) = _lines(raw)  # no tracebacks: one line for the outage
    assert (started["event"], started["dependency"]) == ("outage_started", "postgresql")
    assert started["error"] == "ConnectionRefusedError: [Errno 111] Connect call failed"


async def test_a_database_outage_ends_when_its_probe_connects() -> None:
    """asyncpg's pool says when it cannot reconnect, never when it can: the probe ends
    the outage, and the gauge follows."""
    probes = iter([ConnectionRefusedError(111, "Connect call failed"), None])

    async def probe() -> None:
        answer = next(probes)
        if answer is not None:
            raise answer

    postgresql = reachability.Dependency("postgresql", probe_every=0.01)
    postgresql.probe_with(probe)
    filter_ = reachability.ClientLogFilter(logging.INFO, postgresql=postgresql)
    record = logging.LogRecord(
        "asyncpg.pool",
        logging.WARNING,
        __file__,
        1,
        "Failed to restore the pool connection floor; retrying",
        (),
        None,
    )
    with structlog.testing.capture_logs() as captured:
        assert filter_.filter(record) is False
        assert _up("postgresql") == 0
        await eventually(lambda: not postgresql.down, 5)
    assert [c["event"] for c in captured] == ["outage_started", "outage_ended"]
    assert "last_error" in captured[1] and "error" not in captured[1]
    assert _up("postgresql") == 1


def test_a_filter_that_fails_lets_the_record_through() -> None:
    """logging does not guard filters: an error sorting a record must not reach the
    client's task that logged it."""

    class Broken(reachability.Dependency):
        def failed(self, error: str) -> None:
            raise RuntimeError("broken")

    filter_ = reachability.ClientLogFilter(logging.INFO, kafka=Broken("kafka"))
    record = logging.LogRecord(
        "aiokafka.client", logging.ERROR, __file__, 1, CONNECT, (1, REFUSED), None
    )
    assert filter_.filter(record) is True
