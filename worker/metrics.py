"""Every metric of the worker, in one place. Base units (seconds, events, bytes);
labels are low-cardinality (status, change, cause, partition number)."""

from __future__ import annotations

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

from worker.errors import Cause

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000)

EVENTS_CONSUMED = Counter("ocitag_events_consumed", "Input records taken from Kafka.")
OUTCOMES = Counter(
    "ocitag_outcomes",
    "Outcomes published, by status and change (created/updated/unchanged/deleted; 'none' for "
    "rejections); replay='true' when republished for a duplicate input.",
    ["status", "change", "replay"],
)
EVENT_SECONDS = Histogram(
    "ocitag_event_processing_seconds",
    "Per input record: fetched to outcome acknowledged (its offset is committed after, "
    "in the background).",
    buckets=_LATENCY_BUCKETS,
)
BATCH_SECONDS = Histogram(
    "ocitag_batch_processing_seconds",
    "Per partition batch: decode, apply and publish (the offset commit follows in the background).",
    buckets=_LATENCY_BUCKETS,
)
BATCH_STAGE_SECONDS = Histogram(
    "ocitag_batch_stage_seconds",
    "Per partition batch, by stage: fetch (the oldest record's Kafka timestamp to the "
    "batch being fetched: time in the topic, behind the partition's previous batch "
    "included), decode, apply (the database transaction), produce (every outcome "
    "acknowledged); commit: one background offset commit request, for every batch done "
    "since the last (it holds up no partition). Where an event's latency goes.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_EVENTS = Histogram(
    "ocitag_batch_size_events", "Records per partition batch.", buckets=_SIZE_BUCKETS
)
CONSUMER_LAG = Gauge(
    "ocitag_consumer_lag_events",
    "Log end offset minus committed offset, per assigned input partition.",
    ["partition"],
)
OLDEST_UNPROCESSED_AGE = Gauge(
    "ocitag_oldest_unprocessed_event_age_seconds",
    "Age (by Kafka timestamp) of the oldest fetched record not yet published; 0 when idle.",
)


def _causes(service: str) -> str:
    return ", ".join(c.value for c in Cause if c.service == service)


DB_RETRIES = Counter(
    "ocitag_db_retries",
    f"Database work redone, by cause (one of: {_causes('db')}).",
    ["cause"],
)
KAFKA_RETRIES = Counter(
    "ocitag_kafka_retries",
    f"Kafka work redone, by cause (one of: {_causes('kafka')}).",
    ["cause"],
)
IN_FLIGHT = Gauge("ocitag_in_flight_events", "Records fetched and not yet published.")
LAST_COMMIT = Gauge(
    "ocitag_last_commit_timestamp_seconds", "Unix time of the last successful offset commit."
)
DEAD_LETTERED = Counter("ocitag_dead_lettered", "Records copied to the dead-letter topic.")
ASSIGNED_PARTITIONS = Gauge("ocitag_assigned_partitions", "Input partitions assigned.")
PRODUCER_RECREATED = Counter(
    "ocitag_producer_recreated", "Times the outcome producer was replaced after it got stuck."
)
PRUNED = Counter(
    "ocitag_processed_events_pruned", "Processed-event records deleted after retention."
)

# --- reconcile (worker/reconcile): one host per process, so no registry label
_RUN_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1_800, 3_600)
RECONCILE_RUNS = Counter(
    "ocitag_reconcile_runs",
    "Reconcile runs, by result: ok, partial (some repositories could not be read) or "
    "failed (nothing published: registry, database or Kafka away).",
    ["result"],
)
RECONCILE_TAGS_SCANNED = Counter("ocitag_reconcile_tags_scanned", "Registry tags listed.")
RECONCILE_DIFFERENCES = Counter(
    "ocitag_reconcile_differences",
    "Differences found between the registry and the live records, by kind (moved, deleted).",
    ["kind"],
)
RECONCILE_EVENTS_PUBLISHED = Counter(
    "ocitag_reconcile_events_published", "Repair events acknowledged by Kafka."
)
RECONCILE_REPOSITORY_FAILURES = Counter(
    "ocitag_reconcile_repository_failures",
    "Repositories a run could not read (their records were left alone).",
)
RECONCILE_RUN_SECONDS = Histogram(
    "ocitag_reconcile_run_duration_seconds",
    "Duration of one reconcile run.",
    buckets=_RUN_BUCKETS,
)
RECONCILE_LAST_SUCCESS = Gauge(
    "ocitag_reconcile_last_success_timestamp_seconds",
    "Unix time of the end of the last reconcile run that read every repository.",
)


# --- ingest (`ocitag-worker ingest`). `kind` is one of the served kinds or "unknown"
# (the path is the sender's: never a label as given).
INGEST_DELIVERIES = Counter(
    "ocitag_ingest_deliveries",
    "Webhook deliveries answered, by kind and result (accepted, ignored: nothing to "
    "publish, rejected).",
    ["kind", "result"],
)
INGEST_EVENTS = Counter(
    "ocitag_ingest_events_published",
    "Tag events published and acknowledged, by kind and action (moved, deleted).",
    ["kind", "action"],
)
INGEST_IGNORED = Counter(
    "ocitag_ingest_entries_ignored",
    "Delivery entries acknowledged and not published, by kind and reason (pull, blob, "
    "untagged, digest_delete, …).",
    ["kind", "reason"],
)
INGEST_REJECTED = Counter(
    "ocitag_ingest_deliveries_rejected",
    "Deliveries refused, by kind and cause (not_found, unauthenticated, too_large, "
    "read_timeout, unmappable, unresolved_digest, kafka_unavailable, internal).",
    ["kind", "cause"],
)
INGEST_PRODUCE_SECONDS = Histogram(
    "ocitag_ingest_produce_seconds",
    "Per delivery with events: produce until Kafka acknowledged every event.",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
)
INGEST_DELIVERY_SECONDS = Histogram(
    "ocitag_ingest_delivery_seconds",
    "Per delivery: request received to answer sent.",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
)


# --- api (`ocitag-worker api`)
API_REQUESTS = Counter(
    "ocitag_api_requests",
    "API requests answered, by operation (operationId, 'other' for no route) and status.",
    ["operation", "status"],
)
API_REQUEST_SECONDS = Histogram(
    "ocitag_api_request_duration_seconds",
    "API request received to answer sent, by operation.",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
API_OUTCOME_WAIT_SECONDS = Histogram(
    "ocitag_api_outcome_wait_seconds",
    "Per write: the event acknowledged by Kafka to its outcome arriving (or giving up).",
    buckets=_LATENCY_BUCKETS,
)
API_OUTCOMES_LATE = Counter(
    "ocitag_api_outcomes_late",
    "Writes answered 202 because their outcome did not arrive in OCITAG_API_TIMEOUT_SECONDS.",
)
API_WAITING = Gauge("ocitag_api_waiting_requests", "Writes waiting for their outcome now.")


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
)
# ---- deletions
TOMBSTONES_PRUNED = Counter(
    "ocitag_tombstones_pruned", "Tombstones of deleted tags deleted after retention."
)

# ---- dependencies (worker/reachability.py), in every command that uses them
DEPENDENCY_UP = Gauge(
    "ocitag_dependency_up",
    "1 while this process reaches the dependency (kafka, postgresql), 0 during an outage "
    "(from the first failure to the first success after it).",
    ["dependency"],
)
