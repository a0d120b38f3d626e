"""A reconcile run (once, or every ``--interval`` seconds with /metrics served).

Each repository's repair events are published as soon as its diff is ready, through
the worker's idempotent ``acks=all`` producer, keyed by OCITag ID like every input
event; a difference is reported as published only once Kafka has acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import structlog

from worker import metrics
from worker.db import classify_db_error
from worker.errors import FatalError, TransientError, WorkerError
from worker.health import COMMAND_PARTS, RECONCILE, Health
from worker.identifiers import InvalidIdentifierError, canonical_host
from worker.oci import RegistryClient, RegistryError
from worker.reconcile.diff import RepositoryDiff
from worker.reconcile.events import new_run_id, to_event
from worker.reconcile.output import Output, Summary
from worker.reconcile.scan import (
    LiveRecords,
    RegistryReader,
    Scanner,
    repository_names,
)
from worker.reconcile.store import PostgresLiveRecords
from worker.settings import Settings
from worker.startup import InputSink, Lifecycle, open_component_pool
from worker.waits import wait_at_most

log = structlog.get_logger("worker.reconcile")

EXIT_OK = 0
EXIT_PARTIAL = 3  # some repositories could not be read; the others were repaired


@dataclass(frozen=True)
class Options:
    """The command's arguments."""

    host: str
    repositories: tuple[str, ...] = ()
    dry_run: bool = False
    interval: float | None = None


def parse_options(
    host: str, repositories: list[str] | None, dry_run: bool, interval: float | None
) -> Options:
    """Normalised options; ValueError naming the bad argument."""
    try:
        canonical = canonical_host(host)
    except InvalidIdentifierError:
        raise ValueError(f"--registry '{host}' is not a registry host[:port]") from None
    try:
        names = repository_names(canonical, repositories or [])
    except InvalidIdentifierError as exc:
        raise ValueError(f"--repository: {exc}") from None
    if interval is not None and not interval > 0:
        raise ValueError(f"--interval must be a positive number of seconds (got {interval})")
    return Options(canonical, tuple(names), dry_run, interval)


class EventPublisher(Protocol):
    """What reconcile publishes through: whole events (``InputSink.publish``, or a fake)."""

    async def publish(self, events: list[dict[str, Any]]) -> None: ...


class Reconciler:
    """Scans one host, publishes (unless dry-run) and reports one run."""

    def __init__(
        self,
        registry: RegistryReader,
        records: LiveRecords,
        sink: EventPublisher | None,
        output: Output,
        *,
        concurrency: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_repository: Callable[[], None] = lambda: None,
    ) -> None:
        self._registry = registry
        self._records = records
        self._sink = sink
        self._output = output
        self._concurrency = concurrency
        self._clock = clock
        self._on_repository = on_repository

    async def run(self, options: Options) -> Summary:
        started = self._clock()
        run_id = new_run_id(started)
        began = time.monotonic()
        published = 0
        scanner = Scanner(
            self._registry,
            self._records,
            concurrency=self._concurrency,
            progress=self._output,
            clock=self._clock,
        )
        repositories = await scanner.repositories(options.host, list(options.repositories))

        async def on_diff(repo_diff: RepositoryDiff) -> None:
            nonlocal published
            events = [to_event(d, options.host, run_id) for d in repo_diff.differences]
            if self._sink is not None and events:
                await self._sink.publish(events)
                published += len(events)
                metrics.RECONCILE_EVENTS_PUBLISHED.inc(len(events))
            for difference, event in zip(repo_diff.differences, events, strict=True):
                self._output.difference(difference, None if self._sink is None else event["id"])
            self._on_repository()

        result = await scanner.scan(repositories, on_diff)
        counts: dict[str, int] = {}
        for repo_diff in result.diffs:
            for kind, count in repo_diff.counts.items():
                counts[kind] = counts.get(kind, 0) + count
        summary = Summary(
            run_id=run_id,
            host=options.host,
            started=started,
            dry_run=self._sink is None,
            repositories=result.repositories,
            tags=result.tags,
            duration_seconds=time.monotonic() - began,
            differences=counts,
            agreed=sum(d.agreed for d in result.diffs),
            newer=sum(d.newer for d in result.diffs),
            skipped=result.skipped,
            failed_repositories=tuple(sorted(f.repository for f in result.failures)),
            published=published,
        )
        _count(summary)
        self._output.summary(summary)
        log.info("reconciled", **{k: v for k, v in summary.as_dict().items() if k != "record"})
        return summary


def _count(summary: Summary) -> None:
    metrics.RECONCILE_RUNS.labels("partial" if summary.failed_repositories else "ok").inc()
    metrics.RECONCILE_TAGS_SCANNED.inc(summary.tags)
    for kind, count in summary.differences.items():
        metrics.RECONCILE_DIFFERENCES.labels(kind).inc(count)
    metrics.RECONCILE_REPOSITORY_FAILURES.inc(len(summary.failed_repositories))
    metrics.RECONCILE_RUN_SECONDS.observe(summary.duration_seconds)
    if not summary.failed_repositories:
        metrics.RECONCILE_LAST_SUCCESS.set(time.time())


async def reconcile(
    settings: Settings, options: Options, output: Output, stop: asyncio.Event | None = None
) -> int:
    """The ``reconcile`` command: once, or on an interval until SIGTERM/SIGINT (or until
    ``stop`` is set, when given: then no signal handlers are installed)."""
    # SIGTERM/SIGINT end a run on an interval, unless the caller stops it
    signals = stop is None and options.interval is not None
    async with Lifecycle(stop, handle_signals=signals) as process:
        try:
            pool = await process.pool(
                open_component_pool(
                    settings,
                    min_size=1,
                    max_size=max(2, min(settings.database.db_pool_max_size, 4)),
                )
            )
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, TimeoutError) as exc:
            # a message naming the cause, not a traceback
            raise classify_db_error(exc, "reconcile") from exc
        client = await process.enter(RegistryClient.from_settings(settings))
        sink: InputSink | None = None
        if not options.dry_run:
            sink = await process.input_sink(settings, "reconcile")
            await sink.start_checked()
        if options.interval is None:
            summary = await Reconciler(
                client,
                PostgresLiveRecords(pool),
                sink,
                output,
                concurrency=settings.registry.registry_concurrency,
            ).run(options)
            return EXIT_PARTIAL if summary.failed_repositories else EXIT_OK
        await _every(
            settings,
            options=options,
            client=client,
            pool=pool,
            sink=sink,
            output=output,
            process=process,
        )
        return EXIT_OK


async def _every(
    settings: Settings,
    *,
    options: Options,
    client: RegistryClient,
    pool: Any,
    sink: InputSink | None,
    output: Output,
    process: Lifecycle,
) -> None:
    assert options.interval is not None
    stop = process.stop
    # alive while runs keep finishing (or repositories keep completing)
    health = Health(
        settings.probes.liveness_timeout_seconds + 2 * options.interval,
        parts=COMMAND_PARTS["reconcile"],
    )
    await process.probes(settings, health, "reconcile")
    health.started()
    reconciler = Reconciler(
        client,
        PostgresLiveRecords(pool),
        sink,
        output,
        concurrency=settings.registry.registry_concurrency,
        on_repository=lambda: health.beat(RECONCILE),
    )
    while not stop.is_set():
        health.beat(RECONCILE)
        run = asyncio.create_task(reconciler.run(options))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not run.done():  # stopped mid-run: what is published stays published
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            break
        _log_failure(run)
        await wait_at_most(stop, options.interval)


def _log_failure(run: asyncio.Task[Summary]) -> None:
    """A run that failed for a service that is away is retried at the next interval;
    anything fatal (bad credentials for Kafka or PostgreSQL, a bug) stops the loop."""
    error = run.exception()
    if error is None:
        return
    if isinstance(error, TransientError | RegistryError):
        metrics.RECONCILE_RUNS.labels("failed").inc()
        log.warning("reconcile_failed", error=str(error))
        return
    if isinstance(error, WorkerError):
        raise error
    raise FatalError(f"reconcile failed: {type(error).__name__}: {error}") from error
