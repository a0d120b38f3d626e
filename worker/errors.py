"""The exception tree. Each branch decides what happens next.

- ``TransientError``: a service is unavailable or overloaded. Pause, back off, retry the
  same work; never turned into a problem outcome.
- ``PermanentError``: this one event cannot be processed (a record the database refuses,
  a bug). It gets a problem outcome and its partition moves on.
- ``FatalError``: the worker cannot do its job at all (bad setting, wrong schema version,
  bad credentials). It stops with a message naming the cause.
"""


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""


class TransientError(WorkerError):
    """Retry the same work after a backoff."""

    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(f"{cause}: {detail}" if detail else cause)
        #: low-cardinality label for metrics and logs (``db_connection``, ``kafka_timeout``…)
        self.cause = cause

    @property
    def service(self) -> str:
        """``db`` or ``kafka``: which retry counter this fault counts in."""
        return "db" if self.cause.startswith("db") else "kafka"


class PermanentError(WorkerError):
    """Reject this one event with a problem outcome; the partition moves on."""


class FatalError(WorkerError):
    """Stop the worker; the message names the setting or condition to fix."""


class SettingsError(FatalError):
    """A setting is invalid; the message names it and the rule."""


class SchemaVersionError(FatalError):
    """The database schema is not the one this build expects."""
