"""The exception tree. Each branch decides what happens next.

- ``TransientError``: a service is unavailable or overloaded. Pause, back off, retry the
  same work; never turned into a problem outcome.
- ``PermanentError``: this one event cannot be processed (a record the database refuses,
  a bug). It gets a problem outcome and its partition moves on.
- ``FatalError``: the worker cannot do its job at all (bad setting, wrong schema version,
  bad credentials). It stops with a message naming the cause.

A ``TransientError`` carries a ``Cause``: the one low-cardinality label the retry
counters (``ocitag_db_retries``, ``ocitag_kafka_retries``) and log lines use.
"""

from enum import StrEnum


class Cause(StrEnum):
    """Why work is redone. A fixed set: the metrics' ``cause`` label takes no other value
    (never an exception class name, which would grow the label set without bound)."""

    #: the database connection broke or timed out, or the server is shutting down
    DB_CONNECTION = "db_connection"
    #: the server is overloaded or briefly unable (too many connections, locks, read-only
    #: during a failover, an internal error)
    DB_UNAVAILABLE = "db_unavailable"
    #: the transaction lost a serialisation conflict or a deadlock
    DB_CONFLICT = "db_conflict"
    #: a concurrent writer changed a tag between read and guarded write: decided again
    DB_VERSION_CONFLICT = "db_version_conflict"
    #: another applier recorded some of the batch's events first: the batch is done
    #: again and replays them
    DB_CLAIMED_MEANWHILE = "db_claimed_meanwhile"
    #: the broker is away, moving a leader, or not yet ready
    KAFKA_UNAVAILABLE = "kafka_unavailable"
    #: a Kafka request (send, commit) did not complete in time
    KAFKA_TIMEOUT = "kafka_timeout"
    #: the idempotent producer's state broke; it is replaced
    KAFKA_PRODUCER = "kafka_producer"
    #: an offset commit refused because the group rebalanced: retried for the
    #: partitions still assigned
    KAFKA_REBALANCE = "kafka_rebalance"
    #: a topic a component reads is not there yet (the worker creates its topics at
    #: start): waited for, and no outage (the broker answered)
    KAFKA_TOPIC_MISSING = "kafka_topic_missing"

    @property
    def service(self) -> str:
        """``db`` or ``kafka``: which retry counter counts it."""
        return "db" if self.value.startswith("db") else "kafka"

    @property
    def outage(self) -> bool:
        """The service is away (not a conflict, a rebalance or a broken producer): an
        outage, logged as one (worker/outage.py), not once per attempt."""
        return self in _OUTAGES


_OUTAGES = frozenset(
    {Cause.DB_CONNECTION, Cause.DB_UNAVAILABLE, Cause.KAFKA_UNAVAILABLE, Cause.KAFKA_TIMEOUT}
)


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""


class TransientError(WorkerError):
    """Retry the same work after a backoff."""

    def __init__(self, cause: Cause, detail: str = "") -> None:
        super().__init__(f"{cause}: {detail}" if detail else str(cause))
        self.cause = cause

    @property
    def service(self) -> str:
        """``db`` or ``kafka``: which retry counter this fault counts in."""
        return self.cause.service


class PermanentError(WorkerError):
    """Reject this one event with a problem outcome; the partition moves on."""


class FatalError(WorkerError):
    """Stop the worker; the message names the setting or condition to fix."""


class SettingsError(FatalError):
    """A setting is invalid; the message names it and the rule."""


class SchemaVersionError(FatalError):
    """The database schema is not the one this build expects."""


def describe(exc: BaseException) -> str:
    """``Type: message``, the type named once: the Kafka client's errors already start
    their text with it (``KafkaConnectionError: …``), others do not."""
    name = type(exc).__name__
    text = str(exc)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"
