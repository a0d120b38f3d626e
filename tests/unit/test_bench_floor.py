"""The floor's reading of records and the API benchmark's per-PUT split: pure parts of
bench/floor.py and bench/api_split.py (their runs: tests/integration/test_bench_smoke.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from bench.api_split import Split
from bench.floor import Event, read

DATA = {"repository": "team/app", "tag": "v1", "artifact": "sha256:" + "a" * 64}
ATTRIBUTES = {
    "specversion": "1.0",
    "id": "e1",
    "source": "https://hub.docker.com/webhook",
    "type": "ocitag.moved.v1",
    "time": "2026-12-06T05:00:00.123456Z",
}
EXPECTED = Event(
    "https://hub.docker.com/webhook",
    "e1",
    "team/app",
    "v1",
    "sha256:" + "a" * 64,
    datetime(2026, 12, 6, 5, 0, 0, 123456, tzinfo=UTC),
)


def record(value: bytes, headers: list[tuple[str, bytes]]) -> Any:
    return ConsumerRecord("t", 0, 7, 0, 0, b"k", value, None, len(value), 0, headers)


@pytest.mark.parametrize(
    ("value", "headers", "expected"),
    [
        (json.dumps({**ATTRIBUTES, "data": DATA}).encode(), [], EXPECTED),
        (
            json.dumps(DATA).encode(),
            [(f"ce_{k}", v.encode()) for k, v in ATTRIBUTES.items()],
            EXPECTED,
        ),
        (b"\x01not json", [], None),
        (json.dumps({**ATTRIBUTES, "data": {"tag": "v1"}}).encode(), [], None),
    ],
    ids=["structured", "binary", "not json", "no repository"],
)
def test_the_floor_reads_both_content_modes_and_nothing_else(
    value: bytes, headers: list[tuple[str, bytes]], expected: Event | None
) -> None:
    assert read(record(value, headers)) == expected


def test_each_put_is_split_into_the_workers_time_and_the_apis() -> None:
    split = Split("unused:9092", "in", "out", 1)
    split.created.update({"a": 1_000, "b": 2_000})
    split.answered.update({"a": 1_040, "b": 2_100})
    found = split.summary([("a", 0.050), ("b", 0.130), ("never answered", 0.5)])
    assert (found["split_matched"], found["split_puts"]) == (2, 3)
    assert (found["worker_split_p50_ms"], found["worker_split_p99_ms"]) == (40.0, 100.0)
    assert (found["api_added_p50_ms"], found["api_added_p99_ms"]) == (10.0, 30.0)
