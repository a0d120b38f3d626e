"""Every metric of the worker, in one place. Base units (seconds, events, bytes);
labels are low-cardinality (status, change, cause, partition number).

The metrics are defined here unregistered (``registry=None``: importing this module
registers nothing anywhere); ``COMMANDS`` says which families each long-running command
exports, and ``registry(command)`` builds the registry its /metrics serves. So a
process shows its own families and the shared ones that apply to it, never another
component's at 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import prometheus_client
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.registry import Collector

from worker.errors import Cause

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000)

EVENTS_CONSUMED = Counter(
    "ocitag_events_consumed",
    "Input records taken from Kafka.",
    registry=None,
)
OUTCOMES = Counter(
    "ocitag_outcomes",
    "Outcomes published, by status and change (created/updated/unchanged/deleted; 'none' for "
    "rejections); replay='true' when republished for a duplicate input.",
    ["status", "change", "replay"],
    registry=None,
)
STATE_RECORDS = Counter(
    "ocitag_state_records",
    "Records published to the state topic (acknowledged), by kind: upsert (a live record) or "
    "tombstone (a deletion).",
    ["kind"],
    registry=None,
)
EVENT_SECONDS = Histogram(
    "ocitag_event_processing_seconds",
    "Per input record: fetched to outcome acknowledged (its offset is committed after, "
    "in the background).",
    buckets=_LATENCY_BUCKETS,
    registry=None,
)
BATCH_SECONDS = Histogram(
    "ocitag_batch_processing_seconds",
    "Per run (one fetch's small partition batches, applied and published together): decode, "
    "apply and publish (the offset commits follow in the background).",
    buckets=_LATENCY_BUCKETS,
    registry=None,
)
BATCH_STAGE_SECONDS = Histogram(
    "ocitag_batch_stage_seconds",
    "Per run (one fetch's small partition batches together), by stage: fetch (the oldest "
    "record's Kafka timestamp to the run being fetched: time in the topic, behind the "
    "partition's previous batch "
    "included), decode, apply (the database transaction), produce (every outcome "
    "acknowledged); commit: one background offset commit request, for every batch done "
    "since the last (it holds up no partition). Where an event's latency goes.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
    registry=None,
)
BATCH_EVENTS = Histogram(
    "ocitag_batch_size_events",
    "Records per run (one fetch's small partition batches, applied and published together).",
    buckets=_SIZE_BUCKETS,
    registry=None,
)
TRANSACTION_EVENTS = Histogram(
    "ocitag_transaction_size_events",
    "Events per apply transaction (the runs applied together in it).",
    buckets=_SIZE_BUCKETS,
    registry=None,
)
CONSUMER_LAG = Gauge(
    "ocitag_consumer_lag_events",
    "Log end offset minus committed offset, per assigned input partition.",
    ["partition"],
    registry=None,
)
OLDEST_UNPROCESSED_AGE = Gauge(
    "ocitag_oldest_unprocessed_event_age_seconds",
    "Age (by Kafka timestamp) of the oldest fetched record not yet published; 0 when idle.",
    registry=None,
)


def _causes(service: str) -> str:
    return ", ".join(c.value for c in Cause if c.service == service)


DB_RETRIES = Counter(
    "ocitag_db_retries",
    f"Database work redone, by cause (one of: {_causes('db')}).",
    ["cause"],
    registry=None,
)
KAFKA_RETRIES = Counter(
    "ocitag_kafka_retries",
    f"Kafka work redone, by cause (one of: {_causes('kafka')}).",
    ["cause"],
    registry=None,
)
IN_FLIGHT = Gauge(
    "ocitag_in_flight_events",
    "Records fetched and not yet published.",
    registry=None,
)
LAST_COMMIT = Gauge(
    "ocitag_last_commit_timestamp_seconds",
    "Unix time of the last successful offset commit.",
    registry=None,
)
DEAD_LETTERED = Counter(
    "ocitag_dead_lettered",
    "Records copied to the dead-letter topic.",
    registry=None,
)
ASSIGNED_PARTITIONS = Gauge(
    "ocitag_assigned_partitions",
    "Input partitions assigned.",
    registry=None,
)
PRODUCER_RECREATED = Counter(
    "ocitag_producer_recreated",
    "Times the outcome producer was replaced after it got stuck.",
    registry=None,
)
PRUNED = Counter(
    "ocitag_processed_events_pruned",
    "Processed-event records deleted after retention.",
    registry=None,
)

# --- reconcile (worker/reconcile): one host per process, so no registry label
_RUN_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1_800, 3_600)
RECONCILE_RUNS = Counter(
    "ocitag_reconcile_runs",
    "Reconcile runs, by result: ok, partial (some repositories could not be read) or "
    "failed (nothing published: registry, database or Kafka away).",
    ["result"],
    registry=None,
)
RECONCILE_TAGS_SCANNED = Counter(
    "ocitag_reconcile_tags_scanned",
    "Registry tags listed.",
    registry=None,
)
RECONCILE_DIFFERENCES = Counter(
    "ocitag_reconcile_differences",
    "Differences found between the registry and the live records, by kind (moved, deleted).",
    ["kind"],
    registry=None,
)
RECONCILE_EVENTS_PUBLISHED = Counter(
    "ocitag_reconcile_events_published",
    "Repair events acknowledged by Kafka.",
    registry=None,
)
RECONCILE_REPOSITORY_FAILURES = Counter(
    "ocitag_reconcile_repository_failures",
    "Repositories a run could not read (their records were left alone).",
    registry=None,
)
RECONCILE_RUN_SECONDS = Histogram(
    "ocitag_reconcile_run_duration_seconds",
    "Duration of one reconcile run.",
    buckets=_RUN_BUCKETS,
    registry=None,
)
RECONCILE_LAST_SUCCESS = Gauge(
    "ocitag_reconcile_last_success_timestamp_seconds",
    "Unix time of the end of the last reconcile run that read every repository.",
    registry=None,
)


# --- ingest (`ocitag-worker ingest`). `kind` is one of the served kinds or "unknown"
# (the path is the sender's: never a label as given).
INGEST_DELIVERIES = Counter(
    "ocitag_ingest_deliveries",
    "Webhook deliveries answered, by kind and result (accepted, ignored: nothing to "
    "publish, rejected).",
    ["kind", "result"],
    registry=None,
)
INGEST_EVENTS = Counter(
    "ocitag_ingest_events_published",
    "Tag events published and acknowledged, by kind and action (moved, deleted).",
    ["kind", "action"],
    registry=None,
)
INGEST_IGNORED = Counter(
    "ocitag_ingest_entries_ignored",
    "Delivery entries acknowledged and not published, by kind and reason (pull, blob, "
    "untagged, digest_delete, …).",
    ["kind", "reason"],
    registry=None,
)
INGEST_REJECTED = Counter(
    "ocitag_ingest_deliveries_rejected",
    "Deliveries refused, by kind and cause (not_found, unauthenticated, repeated_header, "
    "too_large, read_timeout, unmappable, unresolved_digest, kafka_unavailable, internal).",
    ["kind", "cause"],
    registry=None,
)
# receivers are the names OCITAG_INGEST_RECEIVERS (and the kinds' secrets) configure,
# "unknown" for any other: bounded by that list
INGEST_RECEIVER_REFUSALS = Counter(
    "ocitag_ingest_receiver_refusals",
    "Deliveries refused (4xx), by receiver and reason (unknown_receiver, unauthenticated, "
    "repeated_header, host_not_allowed, unmappable, too_large, read_timeout).",
    ["receiver", "reason"],
    registry=None,
)
INGEST_PRODUCE_SECONDS = Histogram(
    "ocitag_ingest_produce_seconds",
    "Per delivery with events: produce until Kafka acknowledged every event.",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
    registry=None,
)
INGEST_DELIVERY_SECONDS = Histogram(
    "ocitag_ingest_delivery_seconds",
    "Per delivery: request received to answer sent.",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
    registry=None,
)


# --- api (`ocitag-worker api`)
API_REQUESTS = Counter(
    "ocitag_api_requests",
    "API requests answered, by operation (operationId, 'other' for no route) and status.",
    ["operation", "status"],
    registry=None,
)
API_REQUEST_SECONDS = Histogram(
    "ocitag_api_request_duration_seconds",
    "API request received to answer sent, by operation.",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
    registry=None,
)
API_OUTCOME_WAIT_SECONDS = Histogram(
    "ocitag_api_outcome_wait_seconds",
    "Per write: the event acknowledged by Kafka to its outcome arriving (or giving up).",
    buckets=_LATENCY_BUCKETS,
    registry=None,
)
API_OUTCOMES_LATE = Counter(
    "ocitag_api_outcomes_late",
    "Writes answered 202 because their outcome did not arrive in OCITAG_API_TIMEOUT_SECONDS.",
    registry=None,
)
API_WAITING = Gauge(
    "ocitag_api_waiting_requests",
    "Writes waiting for their outcome now.",
    registry=None,
)
API_WATCHERS = Gauge(
    "ocitag_api_watchers",
    "Watches (GET /ocitags/?watch=true) open now on this api process.",
    registry=None,
)
API_WATCH_EVENTS = Counter(
    "ocitag_api_watch_events",
    "Watch events sent, summed over watchers, by event (upsert, delete, synced, reset).",
    ["event"],
    registry=None,
)
API_WATCH_DISCONNECTS = Counter(
    "ocitag_api_watch_disconnects",
    "Watches ended, by reason (client_closed, too_slow, shutdown, error).",
    ["reason"],
    registry=None,
)
API_WATCH_CATCH_UPS = Counter(
    "ocitag_api_watch_catch_ups",
    "Times a watcher's queue overflowed while it sent a snapshot or a replay and it read "
    "what it missed from the state topic (a short-lived consumer, a few per process at once).",
    registry=None,
)
# callers are the names OCITAG_API_TOKENS configures: bounded by that list
API_CALLER_REQUESTS = Counter(
    "ocitag_api_caller_requests",
    "Authenticated API requests by caller and result: allowed, forbidden (outside its "
    "grants, 403), rate_limited (over OCITAG_API_RATE_LIMIT, 429).",
    ["caller", "result"],
    registry=None,
)


def serve_without_created_series() -> None:
    """Leave out the ``*_created`` series (one per counter and histogram, and per label
    set): nobody graphs a metric's creation time, and they double the scrape. Called
    when /metrics starts to be served, not at import."""
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


# ---- the Python runtime (worker/runtime.py): collector pauses stop the whole event loop,
# so a long one shows as a latency spike in every stage at once
GC_PAUSE_SECONDS = Histogram(
    "ocitag_gc_pause_seconds",
    "Python garbage-collector pauses, by generation (2 = full collection).",
    ["generation"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=None,
)
# ---- history
REPOINTED = Counter(
    "ocitag_repointed",
    "Release tags (OCITAG_IMMUTABLE_TAGS) moved from one artifact to another, also across "
    "a deletion: applied, and flagged `repointed` (replays not counted).",
    registry=None,
)
HISTORY_PARTITIONS_DROPPED = Counter(
    "ocitag_history_entries_dropped",
    "History entries dropped with their partitions past OCITAG_HISTORY_RETENTION_SECONDS "
    "(PostgreSQL's estimate).",
    registry=None,
)
# ---- a stored version gone backwards (worker/regressions.py)
STORE_REGRESSIONS = Counter(
    "ocitag_store_regressions",
    "Rows a batch read that cannot follow from what this worker wrote without a loss "
    "(missing or at a lower version while the write is younger than the tombstone "
    "retention; later, a lower version and an older event time): the store lost "
    "acknowledged writes (a failover to an asynchronous standby). Pages OcitagStoreRegressed.",
    registry=None,
)
# ---- deletions
TOMBSTONES_PRUNED = Counter(
    "ocitag_tombstones_pruned",
    "Tombstones of deleted tags deleted after retention.",
    registry=None,
)

# ---- dependencies (worker/reachability.py), in every command that uses them
DEPENDENCY_UP = Gauge(
    "ocitag_dependency_up",
    "1 while this process reaches the dependency (kafka, postgresql), 0 during an outage "
    "(from the first failure to the first success after it).",
    ["dependency"],
    registry=None,
)

SYNC_REP_STALLED = Gauge(
    "ocitag_db_sync_replication_stalled",
    "1 while PostgreSQL's commits wait for a synchronous standby that is not connected "
    "(synchronous_standby_names set, none streaming), as its outage probe last saw; 0 "
    "otherwise (worker/syncrep.py).",
    registry=None,
)


# ---- which command exports what: the one declaration

#: the worker (``ocitag-worker run``)
WORKER: tuple[Collector, ...] = (
    EVENTS_CONSUMED,
    OUTCOMES,
    STATE_RECORDS,
    EVENT_SECONDS,
    BATCH_SECONDS,
    BATCH_STAGE_SECONDS,
    BATCH_EVENTS,
    TRANSACTION_EVENTS,
    CONSUMER_LAG,
    OLDEST_UNPROCESSED_AGE,
    IN_FLIGHT,
    LAST_COMMIT,
    DEAD_LETTERED,
    ASSIGNED_PARTITIONS,
    PRUNED,
    TOMBSTONES_PRUNED,
    REPOINTED,
    STORE_REGRESSIONS,
    HISTORY_PARTITIONS_DROPPED,
    GC_PAUSE_SECONDS,  # the worker and the api watch their collector (runtime.watch_gc)
)
RECONCILE: tuple[Collector, ...] = (
    RECONCILE_RUNS,
    RECONCILE_TAGS_SCANNED,
    RECONCILE_DIFFERENCES,
    RECONCILE_EVENTS_PUBLISHED,
    RECONCILE_REPOSITORY_FAILURES,
    RECONCILE_RUN_SECONDS,
    RECONCILE_LAST_SUCCESS,
)
INGEST: tuple[Collector, ...] = (
    INGEST_DELIVERIES,
    INGEST_EVENTS,
    INGEST_IGNORED,
    INGEST_REJECTED,
    INGEST_RECEIVER_REFUSALS,
    INGEST_PRODUCE_SECONDS,
    INGEST_DELIVERY_SECONDS,
)
API: tuple[Collector, ...] = (
    GC_PAUSE_SECONDS,
    API_REQUESTS,
    API_REQUEST_SECONDS,
    API_OUTCOME_WAIT_SECONDS,
    API_OUTCOMES_LATE,
    API_WAITING,
    API_WATCHERS,
    API_WATCH_EVENTS,
    API_WATCH_DISCONNECTS,
    API_WATCH_CATCH_UPS,
    API_CALLER_REQUESTS,
)

#: each long-running command's families: its component's, plus the shared ones it can
#: move (retries by the services it retries, the producer it may replace); the
#: process_* and python_* families of prometheus-client come with every registry
COMMANDS: Mapping[str, tuple[Collector, ...]] = {
    "run": (
        *WORKER,
        DB_RETRIES,
        KAFKA_RETRIES,
        PRODUCER_RECREATED,
        DEPENDENCY_UP,
        SYNC_REP_STALLED,
    ),
    "ingest": (*INGEST, KAFKA_RETRIES, PRODUCER_RECREATED, DEPENDENCY_UP),
    "api": (
        *API,
        DB_RETRIES,
        KAFKA_RETRIES,
        PRODUCER_RECREATED,
        DEPENDENCY_UP,
        SYNC_REP_STALLED,
    ),
    "reconcile": (*RECONCILE, PRODUCER_RECREATED, DEPENDENCY_UP, SYNC_REP_STALLED),
}


def registry(command: str) -> CollectorRegistry:
    """A new registry holding what ``command`` exports (``COMMANDS``), for its /metrics.
    A new one per call: tests run several commands in one process, each with its own."""
    built = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, *COMMANDS[command]):
        built.register(collector)
    return built


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """``count`` observations of the same ``amount`` at once: as many ``observe`` calls
    would record (sum + amount times count, the one bucket the amount falls in + count).

    A batch's events share their fetch-to-acknowledged time, and one ``observe`` per
    event was ~2 % of a drain's CPU (a lock and the bucket search, a thousand times
    per batch, for one value). prometheus_client has no call for it, so this reads
    the histogram's own fields (``_sum``, ``_upper_bounds``, ``_buckets``: unchanged
    since 0.4); tests/unit/test_metrics.py holds it equal to ``count`` observes, so a
    library that changes them fails there rather than here."""
    if count <= 0:
        return
    histogram._raise_if_not_observable()  # type: ignore[no-untyped-call]
    histogram._sum.inc(amount * count)
    for i, bound in enumerate(histogram._upper_bounds):
        if amount <= bound:
            histogram._buckets[i].inc(count)
            break
