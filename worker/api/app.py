"""The API process: HTTP first (it answers 503 until its services are there), then
PostgreSQL, the producer and the outcome listener, each retried in the background until
it connects; back down in reverse on SIGTERM/SIGINT (in-flight requests finish first).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import asyncpg
import structlog
from aiohttp import web

from worker import metrics, reachability, runtime
from worker.api.access import access_from_settings
from worker.api.auth import parse_tokens
from worker.api.backends import Backends
from worker.api.feed import StateFeed
from worker.api.listener import OutcomeListener
from worker.api.server import Api, utc_now
from worker.api.store import PgReads
from worker.errors import Cause, FatalError, TransientError
from worker.health import COMMAND_PARTS, HTTP, OUTCOME_LISTENER, Check, Health
from worker.history_reads import PgHistoryReads
from worker.kafka import REACH_PROBE_SECONDS, BrokerUnreachableError, start_whole
from worker.migrate import check_schema
from worker.settings import COMMAND_SETTINGS, Settings
from worker.startup import (
    InputSink,
    Lifecycle,
    Service,
    create_pool,
    kafka_connecting,
    wait_for_service,
)

log = structlog.get_logger("worker.api")

OUTCOME_TOPIC = Service("Kafka outcome topic", "OCITAG_OUTCOME_TOPIC")
STATE_TOPIC = Service("Kafka state topic", "OCITAG_STATE_TOPIC")


def _kafka(exc: BaseException) -> BaseException:
    if isinstance(exc, LookupError):  # the outcome or state topic is not there (yet): the
        # worker creates it at start; the broker answered, so this is no Kafka outage (an
        # outage logged here would hide a real one that follows within the minute)
        return TransientError(Cause.KAFKA_TOPIC_MISSING, str(exc))
    return kafka_connecting(exc, "the api")


class _Consumer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


C = TypeVar("C", bound=_Consumer)

#: longest a consumer that could not start is given to stop
STOP_CONSUMER_SECONDS = 5.0


async def _fresh(make: Callable[[], C]) -> C:
    """A new consumer each attempt (a Kafka consumer once stopped cannot start again),
    started, or stopped again when it could not start."""
    consumer = make()
    try:
        await start_whole(consumer.start, consumer.stop)
    except Exception:
        # a start that failed (a cancelled one was closed by start_whole already);
        # bounded: a client whose start was cut short can wait for ever in stop(), and
        # would hold the api's shutdown with it
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), STOP_CONSUMER_SECONDS)
        raise
    return consumer


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
        access = access_from_settings(settings, time.monotonic)  # SettingsError: exit 2
        if access.grants.unrestricted:
            log.warning(
                "api_no_grants",
                hint="OCITAG_API_GRANTS is not set: every caller may read, write and delete "
                "every tag (docs/authorization.md)",
            )
        unknown = sorted(access.grants.callers() - {caller for _, caller in tokens.entries})
        if unknown:  # a typo in either setting: that caller's grants can never apply
            log.warning("api_grants_without_tokens", callers=unknown)
        self._api = Api(settings, tokens, self.backends, utc_now, access)
        self._health = Health(settings.probes.liveness_timeout_seconds, parts=COMMAND_PARTS["api"])
        self._process = Lifecycle(handle_signals=False)
        self._sink = InputSink(settings, "the api")
        self._pool: asyncpg.Pool | None = None
        self._listener: OutcomeListener | None = None
        self._feed: StateFeed | None = None
        self.port = 0
        #: set when the process must stop (a fatal error in a background part)
        self.stopping = asyncio.Event()
        self.fatal: FatalError | None = None

    async def start(self) -> None:
        """Connect in the background and serve; ``stop`` closes all in reverse: stop
        taking requests, let those in flight answer, then disconnect."""
        s = self._settings
        process = self._process
        log.info("api_starting", settings=s.masked(COMMAND_SETTINGS["api"], changed=True))
        process.on_exit(self._disconnect)
        self._health.readiness_probe = self._ready
        self._health.waiting(OUTCOME_LISTENER, "Kafka")  # until the listener runs
        tasks = [
            process.task(self._health.heartbeat(HTTP), name="api-heartbeat"),
            process.task(self._connect_db(), name="api-db"),
            process.task(self._connect_kafka(), name="api-kafka"),
        ]
        if s.topics.state_topic and s.api.api_max_watches:
            tasks.append(process.task(self._feed_watches(), name="api-state-feed"))
        for task in tasks:
            task.add_done_callback(self._task_done)
        await process.probes(s, self._health, "api")
        runner = web.AppRunner(self._api.app(), access_log=None, shutdown_timeout=10)
        await runner.setup()
        process.on_exit(runner.cleanup)
        # watches end first (``shutdown``): the runner waits for open requests
        process.on_exit(self._end_watches)
        await web.TCPSite(runner, s.api.api_host, s.api.api_port).start()
        self.port = runner.addresses[0][1]
        self._health.started()
        # untuned, a full collection walked every object of start-up (~75,000 from the
        # imports alone: modules, pydantic and OpenAPI schemas) with every request
        # waiting, about one a minute at 200 PUT/s (91-195 ms on a loaded machine), and
        # 14-45 young collections every 15 s (bench-api, BENCH_API_STAGES=1)
        runtime.watch_gc()
        if s.process.gc_tuning:
            runtime.tune_gc()
        log.info("api_listening", port=self.port, topic=s.topics.input_topic)

    async def _end_watches(self) -> None:
        self.backends.feed = None
        if self._feed is not None:
            await self._feed.stop()

    async def _disconnect(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        await self._sink.stop()
        if self._pool is not None:
            await self._pool.close()

    async def _connect_db(self) -> None:
        """PostgreSQL, retried for as long as it takes (callers get 503 meanwhile); a
        refusal (credentials, schema) raises."""
        s = self._settings

        async def schema(pool: asyncpg.Pool) -> None:
            async with pool.acquire() as conn:
                await check_schema(conn)

        pool = await create_pool(s, "api", give_up_after=None, ready=schema)
        self._pool = pool
        reachability.POSTGRESQL.succeeded()
        reads = PgReads(pool)
        self.backends.history = PgHistoryReads(pool)
        self.backends.reads = reads
        log.info("api_database_ready")
        while True:  # the Idempotency-Key times live as long as processed events do
            await asyncio.sleep(s.retention.prune_interval_seconds)
            with contextlib.suppress(Exception):
                await reads.prune(s.retention.processed_retention_seconds)

    async def _connect_kafka(self) -> None:
        s = self._settings
        await self._sink.keep_starting(
            [s.topics.input_topic, s.topics.outcome_topic], classify=_kafka
        )
        reachability.KAFKA.succeeded()

        listener = await wait_for_service(
            OUTCOME_TOPIC,
            lambda: _fresh(lambda: OutcomeListener(s, self.backends.waiters, self._health)),
            classify=_kafka,
        )
        self._listener = listener
        self.backends.publish = self._publish
        log.info("api_kafka_ready", outcome_topic=s.topics.outcome_topic)
        await listener.run()

    async def _feed_watches(self) -> None:
        """The state topic's one consumer, once the topic is there (the worker creates
        it); watches answer 503 until then."""
        s = self._settings
        feed = await wait_for_service(
            STATE_TOPIC, lambda: _fresh(lambda: StateFeed(s)), classify=_kafka
        )
        self._feed = feed
        self.backends.feed = feed
        log.info("api_watch_ready", state_topic=s.topics.state_topic)
        await feed.run()

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
        metrics.API_WAITING.set(len(self.backends.waiters))
        # refused before the producer takes it (then it is surely not published) rather
        # than waiting OCITAG_API_TIMEOUT_SECONDS for an acknowledgement that cannot come
        # a refresh still under way is no proof of an outage: the send decides, and its
        # 503 then says the event may still be published
        if not await self._sink.reachable(REACH_PROBE_SECONDS, unknown=True):
            raise BrokerUnreachableError
        await self._sink.send_all(messages)

    async def _ready(self) -> Check:
        """Ready once it has reached PostgreSQL and Kafka (the outcome consumer at the end
        of its topic); later outages keep it ready: callers get 503 with Retry-After,
        which says more than a missing endpoint."""
        if self.backends.reads is None:
            return Check(False, "database not connected yet")
        if self.backends.publish is None:
            return Check(False, "kafka not connected yet")
        away = [d.name for d in (reachability.KAFKA, reachability.POSTGRESQL) if d.down]
        if away:  # still ready (above), but the reason says what callers meet meanwhile
            return Check(True, f"ready; {' and '.join(away)} unreachable: requests answer 503")
        return Check(True, "ready")

    async def stop(self) -> None:
        """Stop taking requests, let those in flight answer, then disconnect."""
        await self._process.aclose()
        log.info("api_stopped")


async def run_api(
    settings: Settings, stop: asyncio.Event | None = None, *, handle_signals: bool = True
) -> None:
    """``ocitag-worker api``: serve until SIGTERM/SIGINT (or ``stop``)."""
    process = ApiProcess(settings)
    async with Lifecycle(stop, handle_signals=handle_signals) as signals:
        signals.on_exit(process.stop)
        await process.start()
        stopped = asyncio.create_task(signals.stop.wait())
        failed = asyncio.create_task(process.stopping.wait())
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed.cancel()
    if process.fatal is not None:
        raise process.fatal
