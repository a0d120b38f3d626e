"""bench.patched_worker: the what-if overrides reach the consumer, over the worker's own
explicit options (BENCH_CONSUMER_OVERRIDES); history off leaves the store's write no
entries (BENCH_HISTORY_OFF)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiokafka
import pytest

import worker.store
from bench.patched_worker import patch_consumer, patch_history_off
from worker.decision import Applied, TagRecord
from worker.outcomes import OutcomeContext


def test_overrides_win_over_the_options_the_worker_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    received: dict[str, Any] = {}

    def recording_init(self: aiokafka.AIOKafkaConsumer, *args: Any, **kwargs: Any) -> None:
        received.update(kwargs)

    # monkeypatch restores the real constructor after the test, patched or not
    monkeypatch.setattr(aiokafka.AIOKafkaConsumer, "__init__", recording_init)
    patch_consumer({"fetch_max_wait_ms": 10, "max_poll_records": 50})
    aiokafka.AIOKafkaConsumer(
        bootstrap_servers="localhost:9092", fetch_max_wait_ms=100, max_poll_records=2000
    )
    assert received == {
        "bootstrap_servers": "localhost:9092",
        "fetch_max_wait_ms": 10,
        "max_poll_records": 50,
    }


def test_history_off_leaves_the_write_no_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The patch replaces the function the store calls: were it renamed, "off" would
    silently measure history on."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    record = TagRecord("docker.io/library/app", "v1", "ab" * 32, "alice", at, "alice", at, 1,
                       "s", "e1", None, None)  # fmt: skip
    decisions = {0: Applied(record, "created")}
    ctx = OutcomeContext("urn:test", "https://example.com/problems/")
    on = worker.store.history_columns(ctx, decisions, [0], None)
    assert on.columns[0] == [at] and on.names == ["docker.io/library/app:v1", "alice", "s"]
    monkeypatch.setattr(worker.store, "history_columns", worker.store.history_columns)
    patch_history_off()
    off = worker.store.history_columns(ctx, decisions, [0], None)
    assert off.columns == ([],) * 8 and off.names == []
