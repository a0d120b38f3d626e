"""bench.patched_worker: the what-if overrides reach the consumer, over the worker's own
explicit options (BENCH_CONSUMER_OVERRIDES)."""

from __future__ import annotations

from typing import Any

import aiokafka
import pytest

from bench.patched_worker import patch_consumer


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
