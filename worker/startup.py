"""The start-up kit every command composes: one lifecycle, many users.

``run``, ``ingest``, ``api`` and ``reconcile`` start the same way: serve the probes,
wait for PostgreSQL and Kafka with the one start-up backoff (giving up when stopped),
open the pool, check the topics, start the producer of input events; and stop in the
reverse order on any exit. Each piece lives here once; the components only choose
which pieces they need and in which order.

The lifecycle is an ``contextlib.AsyncExitStack``: each resource registers its own
close as it opens, so whatever fails half-way (a refusal, a stop during start-up) closes
exactly what was opened, in reverse. It is the standard library's tool for this, and
unlike framework hooks (FastStream's ``on_startup``, dramatiq's middleware) it needs no
framework around commands that are plain asyncio programs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

import asyncpg
import structlog

from worker.db import classify_db_error, open_pool
from worker.encode import to_record
from worker.errors import Cause, FatalError, TransientError, describe
from worker.health import Health
from worker.http import serve
from worker.kafka import (
    NO_BROKER_ANSWERED,
    PUBLISHING_INPUT_EVENTS,
    Message,
    Producer,
    classify_kafka_error,
    ensure_topics,
    require_topics,
)
from worker.retry import Backoff, retrying
from worker.settings import Settings
from worker.shutdown import install_signals
from worker.waits import wait_at_most

log = structlog.get_logger("worker.startup")
T = TypeVar("T")

#: The start-up backoff (first wait, cap), in seconds: short at first (a service that is
#: starting beside us answers within a second), never more than 5 s between tries.
STARTUP_BACKOFF = (0.25, 5.0)


def startup_backoff() -> Backoff:
    return Backoff(*STARTUP_BACKOFF)


@dataclass(frozen=True)
class Service:
    """What a person reads while start-up waits: the service and the setting naming it."""

    name: str
    setting: str


POSTGRESQL = Service("PostgreSQL", "DATABASE_URL")
KAFKA = Service("Kafka", "KAFKA_BOOTSTRAP_SERVERS")


class StopRequestedError(Exception):
    """SIGTERM/SIGINT arrived while start-up was waiting for a service."""


def kafka_connecting(exc: BaseException, component: str = "the worker") -> Exception:
    """What a failure to reach Kafka at start means (``component``: who was refused)."""
    return classify_kafka_error(exc, "connecting", component=component)


async def wait_for_service(
    service: Service,
    attempt: Callable[[], Awaitable[T]],
    *,
    classify: Callable[[BaseException], BaseException] = kafka_connecting,
    stop: asyncio.Event | None = None,
    give_up_after: float | None = None,
    backoff: Backoff | None = None,
) -> T:
    """Retry ``attempt`` while it fails transiently: until ``give_up_after`` seconds (a
    FatalError naming OCITAG_STARTUP_TIMEOUT_SECONDS then) or for as long as it takes
    when None; StopRequestedError as soon as ``stop`` is set. A refusal raises at once,
    in the classifier's words (they name the cause and the fix)."""
    deadline = None if give_up_after is None else time.monotonic() + give_up_after
    stop = stop or asyncio.Event()

    def checked(exc: BaseException) -> BaseException:
        if isinstance(exc, FatalError):
            return exc
        error = classify(exc)
        if isinstance(error, FatalError):
            return error
        if not isinstance(error, TransientError):
            return FatalError(f"{service.name} ({service.setting}) refused: {exc}")
        if deadline is not None and time.monotonic() >= deadline:
            return FatalError(
                f"{service.name} at {service.setting} did not answer within {give_up_after:g} s "
                f"(OCITAG_STARTUP_TIMEOUT_SECONDS): {describe(exc)}"
            )
        return error

    def report(error: TransientError, attempt: int, delay: float) -> None:
        log.warning(
            "waiting_for_service",
            service=service.name,
            setting=service.setting,
            cause=error.cause,
            error=str(error)[:300],
            attempt=attempt,
            retry_in_seconds=round(delay, 2),
        )

    async def pause(delay: float) -> None:
        if await wait_at_most(stop, delay):
            raise StopRequestedError

    if stop.is_set():
        raise StopRequestedError
    return await retrying(
        attempt, backoff or startup_backoff(), classify=checked, wait=pause, on_retry=report
    )


async def open_component_pool(
    settings: Settings, *, min_size: int | None = None, max_size: int | None = None
) -> asyncpg.Pool:
    """One try at the pool, sized by the settings unless the component says otherwise."""
    return await open_pool(
        settings.database.dsn(),
        settings.database.db_pool_min_size if min_size is None else min_size,
        settings.database.db_pool_max_size if max_size is None else max_size,
        settings.database.db_command_timeout_seconds,
        settings.database.db_idle_in_transaction_timeout_seconds,
    )


def db_errors(component: str) -> Callable[[BaseException], Exception]:
    """PostgreSQL's errors as ``component`` reads them (a refusal names it)."""

    def classify(exc: BaseException) -> Exception:
        return classify_db_error(exc, component)

    return classify


async def create_pool(
    settings: Settings,
    component: str,
    stop: asyncio.Event | None = None,
    *,
    give_up_after: float | None,
    ready: Callable[[asyncpg.Pool], Awaitable[object]] | None = None,
) -> asyncpg.Pool:
    """The pool, once PostgreSQL answers (and ``ready(pool)`` passed, e.g. the schema
    check, closing the pool when it fails); a refusal stops ``component``.
    ``give_up_after``: as ``wait_for_service``."""

    async def connect() -> asyncpg.Pool:
        pool = await open_component_pool(settings)
        if ready is not None:
            try:
                await ready(pool)
            except BaseException:
                await pool.close()
                raise
        return pool

    return await wait_for_service(
        POSTGRESQL,
        connect,
        classify=db_errors(component),
        stop=stop,
        give_up_after=give_up_after,
    )


class EventSink(Protocol):
    """Where input events go: ``InputSink`` or a test fake."""

    async def send_all(self, messages: Sequence[Message]) -> None: ...


class InputSink:
    """The producer of input events for ingest, the api and reconcile: the worker's
    idempotent acks=all producer, started at once or retried until it connects;
    TransientError while it is not up.

    Sends go one message at a time through the producer's accumulator
    (``Producer.send_each``): these commands send a few events per call from many
    concurrent callers, whose records then share batches."""

    def __init__(self, settings: Settings, component: str) -> None:
        self._component = component  # who publishes, as Kafka's refusals name it
        self._settings = settings
        self._producer: Producer | None = None
        self.topic = settings.topics.input_topic

    async def start(self, creates: Sequence[str] = ()) -> None:
        """Create ``creates`` when missing and OCITAG_CREATE_TOPICS allows (as the worker
        does: start order does not matter), then start the producer."""
        if creates and self._settings.topics.create_topics:
            await ensure_topics(self._settings, creates)
        producer = Producer(
            self._settings, component=self._component, action=PUBLISHING_INPUT_EVENTS
        )
        try:
            await producer.start()
        except Exception:  # a failed start (a cancelled one is closed by start_whole)
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producer = producer

    async def start_checked(self) -> None:
        """Start at once, the input topic required (it is the worker's to create)."""
        await require_topics(self._settings, ["input_topic"])
        await self.start()

    async def keep_starting(
        self,
        creates: Sequence[str],
        *,
        classify: Callable[[BaseException], BaseException],
        backoff: Backoff | None = None,
    ) -> None:
        """``start`` until it succeeds, logging each wait; a refusal that ``classify``
        does not make transient raises."""
        await wait_for_service(
            KAFKA, lambda: self.start(creates), classify=classify, backoff=backoff
        )

    async def send_all(self, messages: Sequence[Message]) -> None:
        if self._producer is None:
            raise TransientError(Cause.KAFKA_UNAVAILABLE, "not connected to Kafka yet")
        await self._producer.send_each(messages)

    async def publish(self, events: list[dict[str, Any]]) -> None:
        """Send whole events to the input topic, structured mode."""
        await self.send_all(
            [Message(self.topic, *to_record(event, "structured")) for event in events]
        )

    async def reachable(self, within: float, *, unknown: bool) -> bool:
        """Connected, and a broker answered (asked again within ``within`` seconds when
        the producer had given up; ``unknown`` when it cannot tell by then:
        ``Producer.reachable``)."""
        return self._producer is not None and await self._producer.reachable(
            within, unknown=unknown
        )

    async def kafka_state(self) -> str:
        """What the producer knows now. Asking is also what makes an idle producer
        that gave up on the cluster try again (without waiting for it): the next probe
        sees the broker back."""
        if self._producer is None:
            return "not connected yet"
        if await self._producer.reachable(0.5, unknown=False):
            return "connected"
        return f"unreachable ({NO_BROKER_ANSWERED})"

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()


class Lifecycle:
    """One command's resources, opened in order and closed in reverse on any exit
    (``async with``). ``stop`` is set by SIGTERM/SIGINT when ``handle_signals``."""

    def __init__(self, stop: asyncio.Event | None = None, *, handle_signals: bool = True) -> None:
        self.stop = stop or asyncio.Event()
        self._handle_signals = handle_signals
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Lifecycle:
        if self._handle_signals:
            install_signals(self.stop)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self._stack.__aexit__(kind, exc, traceback)

    async def aclose(self) -> None:
        await self._stack.aclose()

    def on_exit(self, close: Callable[[], Awaitable[object]]) -> None:
        """Run ``close`` on exit (after whatever is registered later)."""
        self._stack.push_async_callback(close)

    async def probes(self, settings: Settings, health: Health, command: str) -> None:
        """/metrics, /healthz, /readyz on OCITAG_HTTP_PORT (when set)."""
        if settings.probes.http_port:
            runner = await serve(
                health, settings.probes.http_host, settings.probes.http_port, command
            )
            self.on_exit(runner.cleanup)

    def task(self, work: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """A background task, cancelled (and awaited) on exit."""
        task = asyncio.create_task(work, name=name)

        async def cancel() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.on_exit(cancel)
        return task

    async def enter(self, context: contextlib.AbstractAsyncContextManager[T]) -> T:
        """An async context manager, exited on exit."""
        return await self._stack.enter_async_context(context)

    async def pool(self, pool: Awaitable[asyncpg.Pool]) -> asyncpg.Pool:
        opened = await pool
        self.on_exit(opened.close)
        return opened

    async def input_sink(self, settings: Settings, component: str) -> InputSink:
        sink = InputSink(settings, component)
        self.on_exit(sink.stop)
        return sink
