"""The API process: HTTP first (it answers 503 until its services are there), then
PostgreSQL, the producer and the outcome listener, each retried in the background until
it connects; back down in reverse on SIGTERM/SIGINT (in-flight requests finish first).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from worker import metrics, reachability
from worker.api.auth import parse_tokens
from worker.api.listener import OutcomeListener
from worker.api.server import Api, Backends, utc_now
from worker.api.store import PgReads
from worker.db import classify_db_error, open_pool
from worker.errors import Cause, FatalError, TransientError
from worker.health import COMMAND_PARTS, HTTP, OUTCOME_LISTENER, Check, Health
from worker.http import serve
from worker.kafka import (
    REACH_PROBE_SECONDS,
    BrokerUnreachableError,
    Producer,
    classify_kafka_error,
    ensure_topics,
)
from worker.migrate import check_schema
from worker.retry import Backoff, retrying
from worker.settings import COMMAND_SETTINGS, Settings
from worker.shutdown import install_signals

log = structlog.get_logger("worker.api")


def _db(exc: BaseException) -> BaseException:
    return exc if isinstance(exc, FatalError) else classify_db_error(exc, "api")


def _kafka(exc: BaseException) -> BaseException:
    if isinstance(exc, LookupError):  # the outcome topic is not there (yet): the worker
        return TransientError(Cause.KAFKA_UNAVAILABLE, str(exc))  # creates it at start
    return classify_kafka_error(exc, "connecting")


class ApiProcess:
    """Start, serve, stop. ``port`` is the bound API port (useful with port 0)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        tokens = parse_tokens(
            settings.api.api_tokens.get_secret_value() if settings.api.api_tokens else None
        )
        if not tokens.entries:
            log.warning("api_no_tokens", hint="OCITAG_API_TOKENS is empty: every call is 401")
        self.backends = Backends()
        self._api = Api(settings, tokens, self.backends, utc_now)
        self._health = Health(settings.probes.liveness_timeout_seconds, parts=COMMAND_PARTS["api"])
        self._runner: web.AppRunner | None = None
        self._probes: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._pool: asyncpg.Pool | None = None
        self._producer: Producer | None = None
        self._listener: OutcomeListener | None = None
        self.port = 0
        #: set when the process must stop (a fatal error in a background part)
        self.stopping = asyncio.Event()
        self.fatal: FatalError | None = None

    async def start(self) -> None:
        s = self._settings
        log.info("api_starting", settings=s.masked(COMMAND_SETTINGS["api"]))
        self._runner = web.AppRunner(self._api.app(), access_log=None, shutdown_timeout=10)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.api.api_host, s.api.api_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if s.probes.http_port:
            self._probes = await serve(self._health, s.probes.http_host, s.probes.http_port, "api")
        self._health.readiness_probe = self._ready
        self._health.started()
        self._health.waiting(OUTCOME_LISTENER, "Kafka")  # until the listener runs
        self._tasks = [
            asyncio.create_task(self._health.heartbeat(HTTP), name="api-heartbeat"),
            asyncio.create_task(self._connect_db(), name="api-db"),
            asyncio.create_task(self._connect_kafka(), name="api-kafka"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_done)
        log.info("api_listening", port=self.port, topic=s.topics.input_topic)

    async def _retry(
        self,
        what: str,
        attempt: Callable[[], Awaitable[None]],
        classify: Callable[[BaseException], BaseException],
    ) -> None:
        """The one retry policy (worker.retry) while ``what`` is away, for as long as it
        takes (callers get 503 meanwhile); a refusal (credentials, schema) raises."""

        def waiting(error: TransientError, attempt: int, delay: float) -> None:
            log.warning(
                "waiting_for_service",
                service=what,
                error=str(error)[:300],
                attempt=attempt,
                retry_in_seconds=round(delay, 2),
            )

        await retrying(attempt, Backoff(0.25, 5.0), classify=classify, on_retry=waiting)

    async def _connect_db(self) -> None:
        s = self._settings

        async def connect() -> None:
            pool = await open_pool(
                s.database.dsn(),
                s.database.db_pool_min_size,
                s.database.db_pool_max_size,
                s.database.db_command_timeout_seconds,
                s.database.db_idle_in_transaction_timeout_seconds,
            )
            try:
                async with pool.acquire() as conn:
                    await check_schema(conn)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool

        await self._retry("PostgreSQL", connect, _db)
        assert self._pool is not None
        reachability.POSTGRESQL.succeeded()
        reads = PgReads(self._pool)
        self.backends.reads = reads
        log.info("api_database_ready")
        while True:  # the Idempotency-Key times live as long as processed events do
            await asyncio.sleep(s.retention.prune_interval_seconds)
            with contextlib.suppress(Exception):
                await reads.prune(s.retention.processed_retention_seconds)

    async def _connect_kafka(self) -> None:
        s = self._settings

        async def start_producer() -> None:
            if s.topics.create_topics:  # as the worker does: start order does not matter
                await ensure_topics(s, [s.topics.input_topic, s.topics.outcome_topic])
            producer = Producer(s)
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer

        await self._retry("Kafka", start_producer, _kafka)
        reachability.KAFKA.succeeded()

        async def start_listener() -> None:
            listener = OutcomeListener(s, self.backends.waiters, self._health)
            try:
                await listener.start()
            except BaseException:
                await listener.stop()
                raise
            self._listener = listener

        await self._retry("Kafka outcome topic", start_listener, _kafka)
        assert self._listener is not None
        self.backends.publish = self._publish
        log.info("api_kafka_ready", outcome_topic=s.topics.outcome_topic)
        await self._listener.run()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A background part that ends by itself was refused for good: stop the process,
        naming why (run_api raises it)."""
        if task.cancelled():
            return
        exc = task.exception()
        error = exc if isinstance(exc, FatalError) else FatalError(f"{task.get_name()}: {exc!r}")
        log.error("api_fatal", error=str(error))
        self.fatal = error
        self.stopping.set()

    async def _publish(self, messages: Any) -> None:
        assert self._producer is not None
        metrics.API_WAITING.set(len(self.backends.waiters))
        # refused before the producer takes it (then it is surely not published) rather
        # than waiting OCITAG_API_TIMEOUT_SECONDS for an acknowledgement that cannot come
        if not await self._producer.reachable(REACH_PROBE_SECONDS):
            raise BrokerUnreachableError
        await self._producer.send_all(messages)

    async def _ready(self) -> Check:
        """Ready once it has reached PostgreSQL and Kafka (the outcome consumer at the end
        of its topic); later outages keep it ready: callers get 503 with Retry-After,
        which says more than a missing endpoint."""
        if self.backends.reads is None:
            return Check(False, "database not connected yet")
        if self.backends.publish is None:
            return Check(False, "kafka not connected yet")
        return Check(True, "ready")

    async def stop(self) -> None:
        """Stop taking requests, let those in flight answer, then disconnect."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._probes is not None:
            await self._probes.cleanup()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            await self._listener.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._pool is not None:
            await self._pool.close()
        log.info("api_stopped")


async def run_api(
    settings: Settings, stop: asyncio.Event | None = None, *, handle_signals: bool = True
) -> None:
    """``ocitag-worker api``: serve until SIGTERM/SIGINT (or ``stop``)."""
    stop = stop or asyncio.Event()
    if handle_signals:
        install_signals(stop)
    process = ApiProcess(settings)
    await process.start()
    try:
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(process.stopping.wait())
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed.cancel()
    finally:
        await process.stop()
    if process.fatal is not None:
        raise process.fatal
