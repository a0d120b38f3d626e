"""Whether this process reaches Kafka and PostgreSQL: the outage tracker
(worker/outage.py) of each, fed with what fails and succeeds, its lines logged here and
its state in the gauge ``ocitag_dependency_up``.

Fed by the retry paths (worker/retry.py: a transient error whose cause is an outage,
then the work succeeding), by the database reads of the api, and for Kafka by the
client's own log records (``ClientLogFilter``, installed by worker/logs.py): the
client retries by itself, about 70 times a second, and says so in a line each time
(asyncpg's pool, reconnecting, in one with a traceback).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

import structlog

from worker import metrics, syncrep
from worker.errors import describe
from worker.kafka import ClientRecord, check_connection, classify_client_record
from worker.outage import Change, OutageTracker, Report
from worker.settings import Settings
from worker.syncrep import SyncReplicationStalledError

#: the most an outage logs while it lasts: one line per this many seconds
REPORT_EVERY_SECONDS = 30.0
#: while a dependency is down, how often its probe (if it has one) asks whether it is back
PROBE_EVERY_SECONDS = 2.0


class Dependency:
    """One dependency as this process sees it: told of failures and successes from
    anywhere (the event loop or another thread), it logs what its tracker decides and
    keeps the gauge."""

    def __init__(
        self,
        name: str,
        every: float = REPORT_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        probe_every: float = PROBE_EVERY_SECONDS,
    ) -> None:
        self.name = name
        self._probe_every = probe_every
        self._tracker = OutageTracker(every)
        self._clock = clock
        # the Kafka client's records may come from other threads (a test's to_thread)
        self._lock = threading.Lock()
        self._probe: Callable[[], Awaitable[object]] | None = None
        self._on_back: Callable[[], object] | None = None
        self._watch: asyncio.Task[None] | None = None

    def probe_with(
        self, probe: Callable[[], Awaitable[object]], on_back: Callable[[], object] | None = None
    ) -> None:
        """How to tell that the dependency is back, tried every ``probe_every`` seconds
        while it is down. A client that reconnects by itself says nothing when it
        succeeds (a producer with the metadata it had sends again without asking for
        more), so an idle process would otherwise never see an outage end. A probe that
        raises ``SyncReplicationStalledError`` knows why the outage goes on: its words
        become the outage's error. ``on_back`` runs when the dependency answers again."""
        self._probe = probe
        self._on_back = on_back

    @property
    def down(self) -> bool:
        return self._tracker.down

    def failed(self, error: str) -> None:
        with self._lock:
            report = self._tracker.failed(self._clock(), error)
        metrics.DEPENDENCY_UP.labels(self.name).set(0)
        if report is not None:
            self._log(report)
        self._watch_until_back()

    def succeeded(self) -> None:
        with self._lock:
            report = self._tracker.succeeded(self._clock())
        metrics.DEPENDENCY_UP.labels(self.name).set(1)
        if report is not None:
            self._log(report)
            if self._on_back is not None:
                self._on_back()

    def _watch_until_back(self) -> None:
        if self._probe is None or (self._watch is not None and not self._watch.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a record from another thread: the next failure starts it
            return
        self._watch = loop.create_task(self._until_back(self._probe), name="reachability")

    async def _until_back(self, probe: Callable[[], Awaitable[object]]) -> None:
        while self.down:
            await asyncio.sleep(self._probe_every)
            try:
                # not wait_for: on Python 3.11 it can lose this task's cancellation
                # (worker/waits.py)
                async with asyncio.timeout(self._probe_every):
                    await probe()
            except SyncReplicationStalledError as exc:  # not away: stalled, and why
                self.failed(str(exc))
                continue
            except Exception:  # noqa: S112 - still away: its failure is not news
                continue
            self.succeeded()

    def _log(self, report: Report) -> None:
        # a new proxy each time: outage lines are rare, and a process-wide tracker must
        # not keep a logger bound to the stream of the configuration it first saw
        log = structlog.get_logger("worker.reachability")
        # the last error of an outage that ended is history, not a failure now
        fields = {
            "dependency": self.name,
            "errors": report.errors,
            "last_error" if report.change is Change.ENDED else "error": report.error[:300],
            "seconds": round(report.seconds, 1),
        }
        if report.change is Change.STARTED:
            log.warning("outage_started", **fields)
        elif report.change is Change.ONGOING:
            log.warning("outage_ongoing", **fields)
        else:
            log.info("outage_ended", **fields)


KAFKA = Dependency("kafka")
POSTGRESQL = Dependency("postgresql")


def probe_services(settings: Settings) -> None:
    """How each dependency's outage is known to end: a broker of KAFKA_BOOTSTRAP_SERVERS
    answers, PostgreSQL at DATABASE_URL accepts a session whose commits are not stalled on
    synchronous replication (worker/syncrep.py). Neither client says so by
    itself: asyncpg's pool reconnects without a word, and an idle Kafka client does not
    try."""
    KAFKA.probe_with(lambda: check_connection(settings))
    POSTGRESQL.probe_with(lambda: syncrep.probe(settings.database.dsn()), syncrep.WATCH.clear)


def of(service: str) -> Dependency:
    """The dependency of a ``Cause.service`` (``db`` or ``kafka``)."""
    return POSTGRESQL if service == "db" else KAFKA


#: asyncpg's pool reconnecting its minimum of connections, with a traceback, while the
#: server is away (its own backoff: 1 s doubling to 60 s)
_POOL_FLOOR_LOST = "Failed to restore the pool connection floor; retrying"


class ClientLogFilter(logging.Filter):
    """On the log handler, for the clients' own records: the Kafka client's connection
    failures go to ``KAFKA`` instead of the stream, its metadata refreshes tell
    ``KAFKA`` it is back, the retriable answers of a broker that is there drop to debug,
    and asyncpg's pool failing to reconnect goes to ``POSTGRESQL``. ``level``: the
    configured one (debug lets the debug lines through)."""

    #: aiokafka.cluster logs each metadata refresh at DEBUG: lowered to it to hear them
    LISTENS_TO = "aiokafka.cluster"

    def __init__(
        self, level: int, kafka: Dependency | None = None, postgresql: Dependency | None = None
    ) -> None:
        super().__init__()
        self._level = level
        self._kafka = kafka or KAFKA
        self._postgresql = postgresql or POSTGRESQL

    def filter(self, record: logging.LogRecord) -> bool:
        # logging guards a handler's emit, not its filters: an error here would be raised
        # inside the client's own task (its sender, its coordinator, the pool)
        try:
            return self._sort(record)
        except Exception:
            return True

    def _sort(self, record: logging.LogRecord) -> bool:
        if record.name == "asyncpg.pool" and record.msg == _POOL_FLOOR_LOST:
            error = record.exc_info[1] if record.exc_info else None
            self._postgresql.failed(describe(error) if error else record.getMessage())
            return False
        kind = classify_client_record(record.name, record.msg, record.args)
        if kind is ClientRecord.UNREACHABLE:
            self._kafka.failed(record.getMessage())
            return False
        if kind is ClientRecord.REACHED:
            self._kafka.succeeded()
        elif kind is ClientRecord.TRANSIENT:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self._level <= logging.DEBUG
        # the libraries' own INFO chatter stays out, as worker/logs.py has it
        return record.levelno >= max(self._level, logging.WARNING)
