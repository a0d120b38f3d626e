"""Fault classification decides what happens next: retry, reject one event, or stop."""

from __future__ import annotations

import ssl

import asyncpg
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)

from worker.db import classify_db_error
from worker.errors import Cause, FatalError, PermanentError, TransientError
from worker.kafka import (
    PUBLISHING_INPUT_EVENTS,
    PUBLISHING_OUTCOMES,
    Message,
    MessageTooLargeError,
    Producer,
    classify_kafka_error,
)
from worker.settings import load_settings


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), TransientError),
        (asyncpg.exceptions.AdminShutdownError("shutdown"), TransientError),
        (asyncpg.exceptions.TooManyConnectionsError("too many"), TransientError),
        (asyncpg.exceptions.CannotConnectNowError("starting"), TransientError),
        (asyncpg.exceptions.SerializationError("serialization"), TransientError),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), TransientError),
        (asyncpg.exceptions.ReadOnlySQLTransactionError("failover"), TransientError),
        (asyncpg.exceptions.IdleInTransactionSessionTimeoutError("idle"), TransientError),
        (
            asyncpg.exceptions.FeatureNotSupportedError("cached plan must not change"),
            TransientError,
        ),
        (ConnectionRefusedError(111, "refused"), TransientError),
        # seen when PostgreSQL shut down under a running transaction (fault suite)
        (asyncpg.exceptions.InternalClientError("cannot switch to state 15"), TransientError),
        (TimeoutError(), TransientError),
        # the event's own data does not fit: reject that one event
        (asyncpg.exceptions.StringDataRightTruncationError("too long"), PermanentError),
        (asyncpg.exceptions.ProgramLimitExceededError("index row too large"), PermanentError),
        # the worker cannot do its job: stop, never turn it into problem outcomes
        (asyncpg.exceptions.InsufficientPrivilegeError("permission denied"), FatalError),
        (asyncpg.exceptions.UndefinedTableError("no ocitags"), FatalError),
        (asyncpg.exceptions.UndefinedColumnError("schema changed"), FatalError),
        (asyncpg.exceptions.NotNullViolationError("a new constraint"), FatalError),
        (asyncpg.exceptions.InvalidPasswordError("password"), FatalError),
        (asyncpg.exceptions.InvalidCatalogNameError("no database"), FatalError),
        (ssl.SSLCertVerificationError("bad certificate"), FatalError),
        (KeyError("a bug"), FatalError),
    ],
)
def test_database_errors(error: BaseException, kind: type[Exception]) -> None:
    assert isinstance(classify_db_error(error, "worker"), kind)


# One row per refusal a person meets at start-up: the component that was refused, the
# server's reason and SQLSTATE, and the fix: the setting for a login or a database name,
# `ocitag-worker migrate` only where the schema is what is missing.
@pytest.mark.parametrize(
    ("error", "component", "says", "never"),
    [
        (
            asyncpg.exceptions.InvalidPasswordError(
                'password authentication failed for user "ocitag"'
            ),
            "api",
            [
                "refused the api:",
                "password authentication failed",
                "28P01",
                "password in DATABASE_URL",
            ],
            ["migrate`", "the worker"],
        ),
        (
            asyncpg.exceptions.InvalidAuthorizationSpecificationError(
                'role "nobody" does not exist'
            ),
            "reconcile",
            [
                "refused the reconcile:",
                'role "nobody" does not exist',
                "28000",
                "user name in DATABASE_URL",
                "pg_hba.conf",
            ],
            ["migrate`", "the worker"],
        ),
        (
            asyncpg.exceptions.InvalidCatalogNameError('database "ocitag" does not exist'),
            "worker",
            ["refused the worker:", "3D000", "database name in DATABASE_URL"],
            ["api"],
        ),
        (
            asyncpg.exceptions.UndefinedTableError('relation "ocitags" does not exist'),
            "api",
            ["refused the api:", "42P01", "run `ocitag-worker migrate`"],
            ["DATABASE_URL", "the worker"],
        ),
        (
            asyncpg.exceptions.UndefinedColumnError('column "deleted_on" does not exist'),
            "worker",
            ["42703", "does not match this version: run `ocitag-worker migrate`"],
            ["DATABASE_URL"],
        ),
        (
            asyncpg.exceptions.InsufficientPrivilegeError("permission denied for table ocitags"),
            "reconcile",
            ["refused the reconcile:", "42501", "grant the role in DATABASE_URL"],
            ["the worker"],
        ),
        (
            asyncpg.exceptions.NotNullViolationError("a new constraint"),
            "migration",
            ["refused the migration:", "23502", "ocitag-worker migrate` ran for this version"],
            ["the worker"],
        ),
        (
            ssl.SSLCertVerificationError("bad certificate"),
            "api",
            ["the api rejected"],
            ["the worker"],
        ),
        (KeyError("a bug"), "reconcile", ["unexpected error in the reconcile"], ["the worker"]),
    ],
)
def test_a_refusal_names_the_component_the_cause_and_the_fix(
    error: BaseException, component: str, says: list[str], never: list[str]
) -> None:
    message = str(classify_db_error(error, component))
    for words in says:
        assert words in message, message
    for words in never:
        assert words not in message, message


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (KafkaConnectionError("down"), TransientError),
        (KafkaTimeoutError(), TransientError),
        (NotLeaderForPartitionError(), TransientError),
        (OSError("reset"), TransientError),
        (SaslAuthenticationFailed(), FatalError),
        (TopicAuthorizationFailedError(), FatalError),
        (ssl.SSLCertVerificationError("bad certificate"), FatalError),
    ],
)
def test_kafka_errors(error: BaseException, kind: type[Exception]) -> None:
    assert isinstance(classify_kafka_error(error, "testing"), kind)


def test_transient_errors_say_which_service() -> None:
    assert TransientError(Cause.DB_CONNECTION).service == "db"
    assert TransientError(Cause.KAFKA_TIMEOUT).service == "kafka"


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), Cause.DB_CONNECTION),
        (asyncpg.exceptions.AdminShutdownError("shutdown"), Cause.DB_CONNECTION),
        (ConnectionRefusedError(111, "refused"), Cause.DB_CONNECTION),
        (asyncpg.exceptions.TooManyConnectionsError("too many"), Cause.DB_UNAVAILABLE),
        (asyncpg.exceptions.ReadOnlySQLTransactionError("failover"), Cause.DB_UNAVAILABLE),
        (asyncpg.exceptions.SerializationError("serialization"), Cause.DB_CONFLICT),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), Cause.DB_CONFLICT),
        (KafkaConnectionError("down"), Cause.KAFKA_UNAVAILABLE),
        (NotLeaderForPartitionError(), Cause.KAFKA_UNAVAILABLE),
        (KafkaTimeoutError(), Cause.KAFKA_TIMEOUT),
        (TimeoutError(), Cause.KAFKA_TIMEOUT),
    ],
)
def test_transient_faults_carry_one_of_the_fixed_causes(error: BaseException, cause: Cause) -> None:
    """The retry counters' label is one of a fixed set, never an exception's name."""
    if cause.service == "db":
        classified = classify_db_error(error, "worker")
    else:
        classified = classify_kafka_error(error, "testing")
    assert isinstance(classified, TransientError) and classified.cause is cause


def test_a_message_too_large_for_its_topic_is_told_apart() -> None:
    """The dead letters react to it (trim the copy); it is not a retry and not fatal."""
    classified = classify_kafka_error(MessageSizeTooLargeError(), "publishing")
    assert isinstance(classified, MessageTooLargeError)


@pytest.mark.parametrize(
    ("component", "action"),
    [
        ("the worker", PUBLISHING_OUTCOMES),
        ("ingest", PUBLISHING_INPUT_EVENTS),
        ("the api", PUBLISHING_INPUT_EVENTS),
        ("reconcile", PUBLISHING_INPUT_EVENTS),
    ],
)
async def test_a_refused_producer_names_its_command_and_what_it_was_doing(
    component: str, action: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = Producer(load_settings({}, environ={}), component=component, action=action)

    async def refused(*args: object, **kwargs: object) -> None:
        raise SaslAuthenticationFailed()

    monkeypatch.setattr(producer._producer, "send", refused)
    try:
        with pytest.raises(FatalError, match=f"^Kafka refused {component} while {action}: "):
            await producer.send_each([Message("t", b"k", b"v", [])])
    finally:
        await producer.stop()
