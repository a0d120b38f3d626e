"""The worker's input consumer gets its fetch and membership settings (worker/app.py
``input_consumer_options``): what a consumer setting changes reaches aiokafka."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from worker.app import input_consumer_options
from worker.settings import load_settings


@pytest.mark.parametrize(
    ("setting", "value", "option"),
    [
        ("fetch_min_bytes", 32_768, "fetch_min_bytes"),
        ("fetch_max_wait_ms", 10, "fetch_max_wait_ms"),
        ("max_batch_records", 500, "max_poll_records"),
        ("fetch_max_bytes", 1_048_576, "fetch_max_bytes"),
        ("max_partition_fetch_bytes", 262_144, "max_partition_fetch_bytes"),
        ("session_timeout_ms", 12_000, "session_timeout_ms"),
        ("heartbeat_interval_ms", 2_000, "heartbeat_interval_ms"),
        ("max_poll_interval_ms", 60_000, "max_poll_interval_ms"),
    ],
)
def test_a_consumer_setting_reaches_the_consumer(setting: str, value: Any, option: str) -> None:
    settings = load_settings({setting: value}, environ={})
    assert input_consumer_options(settings)[option] == value


def test_the_defaults_answer_a_fetch_at_once_and_commit_only_by_hand() -> None:
    options = input_consumer_options(load_settings({}, environ={}))
    assert options["fetch_min_bytes"] == 1
    assert options["enable_auto_commit"] is False
    assert options["isolation_level"] == "read_committed"


async def test_aiokafka_takes_every_option() -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers="localhost:1", **input_consumer_options(load_settings({}, environ={}))
    )
    await consumer.stop()
