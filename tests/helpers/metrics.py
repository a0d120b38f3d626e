"""What a command's /metrics shows, and which metric families belong to which component
(written out here, not read from worker/metrics.py, so that the tests check it)."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

#: each component's own families; no other command may show them
COMPONENT_FAMILIES: dict[str, frozenset[str]] = {
    "run": frozenset(
        {
            "ocitag_events_consumed",
            "ocitag_outcomes",
            "ocitag_state_records",
            "ocitag_event_processing_seconds",
            "ocitag_batch_processing_seconds",
            "ocitag_batch_stage_seconds",
            "ocitag_batch_size_events",
            "ocitag_transaction_size_events",
            "ocitag_consumer_lag_events",
            "ocitag_oldest_unprocessed_event_age_seconds",
            "ocitag_in_flight_events",
            "ocitag_last_commit_timestamp_seconds",
            "ocitag_dead_lettered",
            "ocitag_assigned_partitions",
            "ocitag_processed_events_pruned",
            "ocitag_tombstones_pruned",
            "ocitag_repointed",
            "ocitag_store_regressions",
            "ocitag_history_entries_dropped",
            "ocitag_gc_pause_seconds",
        }
    ),
    "ingest": frozenset(
        {
            "ocitag_ingest_deliveries",
            "ocitag_ingest_events_published",
            "ocitag_ingest_entries_ignored",
            "ocitag_ingest_deliveries_rejected",
            "ocitag_ingest_receiver_refusals",
            "ocitag_ingest_produce_seconds",
            "ocitag_ingest_delivery_seconds",
        }
    ),
    "api": frozenset(
        {
            "ocitag_gc_pause_seconds",
            "ocitag_api_requests",
            "ocitag_api_request_duration_seconds",
            "ocitag_api_outcome_wait_seconds",
            "ocitag_api_outcomes_late",
            "ocitag_api_waiting_requests",
            "ocitag_api_watchers",
            "ocitag_api_watch_events",
            "ocitag_api_watch_disconnects",
            "ocitag_api_watch_catch_ups",
            "ocitag_api_caller_requests",
        }
    ),
    "reconcile": frozenset(
        {
            "ocitag_reconcile_runs",
            "ocitag_reconcile_tags_scanned",
            "ocitag_reconcile_differences",
            "ocitag_reconcile_events_published",
            "ocitag_reconcile_repository_failures",
            "ocitag_reconcile_run_duration_seconds",
            "ocitag_reconcile_last_success_timestamp_seconds",
        }
    ),
}

_EVERY = frozenset({"ocitag_producer_recreated", "ocitag_dependency_up"})
#: the commands that use PostgreSQL: whether their commits wait for a missing standby
_DB = frozenset({"ocitag_db_sync_replication_stalled"})

#: the shared families each command can move: retries of the services it retries, the
#: producer it may replace, whether its dependencies answer
SHARED_FAMILIES: dict[str, frozenset[str]] = {
    "run": _EVERY | _DB | {"ocitag_db_retries", "ocitag_kafka_retries"},
    "ingest": _EVERY | {"ocitag_kafka_retries"},
    "api": _EVERY | _DB | {"ocitag_db_retries", "ocitag_kafka_retries"},
    "reconcile": _EVERY | _DB,
}


def expected_families(command: str) -> frozenset[str]:
    """The ``ocitag_*`` families ``command``'s /metrics shows: exactly these."""
    return COMPONENT_FAMILIES[command] | SHARED_FAMILIES[command]


def families(text: str) -> set[str]:
    """The family names of a /metrics body (counters without ``_total``)."""
    return {family.name for family in text_string_to_metric_families(text)}


async def scrape_families(port: int, host: str = "127.0.0.1") -> set[str]:
    """The family names ``http://host:port/metrics`` shows."""
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/metrics") as r:
        return families(await r.text())
