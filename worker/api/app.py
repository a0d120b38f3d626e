"""The API process: HTTP first (it answers 503 until its services are there), then
PostgreSQL, the producer and the outcome listener, each retried in the background until
it connects; back down in reverse on SIGTERM/SIGINT (in-flight requests finish first).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from worker import metrics
from worker.api.auth import parse_tokens
from worker.api.listener import OutcomeListener
from worker.api.server import Api, Backends, utc_now
from worker.api.store import PgReads
from worker.db import open_pool
from worker.health import Check, Health
from worker.http import serve
from worker.kafka import Producer
from worker.migrate import check_schema
from worker.pipeline import Backoff
from worker.settings import Settings

log = structlog.get_logger("worker.api")


class ApiProcess:
    """Start, serve, stop. ``port`` is the bound API port (useful with port 0)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        tokens = parse_tokens(
            settings.api_tokens.get_secret_value() if settings.api_tokens else None
        )
        if not tokens.entries:
            log.warning("api_no_tokens", hint="OCITAG_API_TOKENS is empty: every call is 401")
        self.backends = Backends()
        self._api = Api(settings, tokens, self.backends, utc_now)
        self._health = Health(settings.liveness_timeout_seconds)
        self._runner: web.AppRunner | None = None
        self._probes: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._pool: asyncpg.Pool | None = None
        self._producer: Producer | None = None
        self._listener: OutcomeListener | None = None
        self.port = 0

    async def start(self) -> None:
        s = self._settings
        log.info("api_starting", settings=s.masked())
        self._runner = web.AppRunner(self._api.app(), access_log=None, shutdown_timeout=10)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.api_host, s.api_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if s.http_port:
            self._probes = await serve(self._health, s.http_host, s.http_port)
        self._health.readiness_probe = self._ready
        self._health.started()
        self._tasks = [
            asyncio.create_task(self._connect_db(), name="api-db"),
            asyncio.create_task(self._connect_kafka(), name="api-kafka"),
        ]
        log.info("api_listening", port=self.port, topic=s.input_topic)

    async def _retry(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        backoff = Backoff(0.25, 5.0)
        while True:
            try:
                await attempt()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next_delay()
                log.warning(
                    "waiting_for_service",
                    service=what,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    retry_in_seconds=round(delay, 2),
                )
                await asyncio.sleep(delay)

    async def _connect_db(self) -> None:
        s = self._settings

        async def connect() -> None:
            pool = await open_pool(
                s.dsn(),
                s.db_pool_min_size,
                s.db_pool_max_size,
                s.db_command_timeout_seconds,
                s.db_idle_in_transaction_timeout_seconds,
            )
            try:
                async with pool.acquire() as conn:
                    await check_schema(conn)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool

        await self._retry("PostgreSQL", connect)
        assert self._pool is not None
        reads = PgReads(self._pool)
        self.backends.reads = reads
        log.info("api_database_ready")
        while True:  # the Idempotency-Key times live as long as processed events do
            await asyncio.sleep(s.prune_interval_seconds)
            with contextlib.suppress(Exception):
                await reads.prune(s.processed_retention_seconds)

    async def _connect_kafka(self) -> None:
        s = self._settings

        async def start_producer() -> None:
            producer = Producer(s)
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer

        await self._retry("Kafka", start_producer)

        async def start_listener() -> None:
            listener = OutcomeListener(s, self.backends.waiters)
            try:
                await listener.start()
            except BaseException:
                await listener.stop()
                raise
            self._listener = listener

        await self._retry("Kafka outcome topic", start_listener)
        assert self._listener is not None
        self.backends.publish = self._publish
        log.info("api_kafka_ready", outcome_topic=s.outcome_topic)
        await self._listener.run()

    async def _publish(self, messages: Any) -> None:
        assert self._producer is not None
        metrics.API_WAITING.set(len(self.backends.waiters))
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
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    process = ApiProcess(settings)
    await process.start()
    try:
        await stop.wait()
    finally:
        await process.stop()
