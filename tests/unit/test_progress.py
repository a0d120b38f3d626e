"""The progress gauges (worker/progress.py): what they say, and that the poll loop's
request after every poll refreshes them at most every REFRESH_SECONDS."""

from __future__ import annotations

import time

from aiokafka import TopicPartition

from tests.helpers.fakes import TOPIC, FakeConsumer
from worker import metrics
from worker.batches import Batch
from worker.events import RawRecord
from worker.progress import REFRESH_SECONDS, Progress

P0 = TopicPartition(TOPIC, 0)
P1 = TopicPartition(TOPIC, 1)


def gauge(name: str, **labels: str) -> float | None:
    return metrics.registry("run").get_sample_value(name, labels)


def batch(*offsets: int, timestamp_ms: int = 1_000) -> Batch:
    records = [
        RawRecord(TOPIC, 0, offset, timestamp_ms, None, b"{}", (), None) for offset in offsets
    ]
    return Batch(P0, records, 0.0)


def test_the_gauges_are_refreshed_at_most_every_refresh_seconds() -> None:
    consumer = FakeConsumer([])
    consumer.add(0, b"a", b"b", b"c", b"d")
    now = [100.0]
    progress = Progress(consumer, {P0: 1}, clock=lambda: now[0])
    progress.update({P0: batch(1, 2)})
    assert gauge("ocitag_in_flight_events") == 2
    assert gauge("ocitag_consumer_lag_events", partition="0") == 3  # end 4, committed 1
    now[0] += REFRESH_SECONDS / 2
    progress.update({})  # too soon: the gauges stay as they were
    assert gauge("ocitag_in_flight_events") == 2
    now[0] += REFRESH_SECONDS / 2
    progress.update({})
    assert gauge("ocitag_in_flight_events") == 0
    assert gauge("ocitag_oldest_unprocessed_event_age_seconds") == 0


def test_a_bare_unreadable_record_in_flight_is_not_the_oldest() -> None:
    """Its timestamp is unknown (0): the age is the readable records', not 56 years."""
    consumer = FakeConsumer([])
    consumer.add(0, b"a")
    progress = Progress(consumer, {}, clock=lambda: 0.0)
    now_ms = int(time.time() * 1000)
    progress.update({P0: batch(1, timestamp_ms=0), P1: batch(2, timestamp_ms=now_ms - 5_000)})
    age = gauge("ocitag_oldest_unprocessed_event_age_seconds")
    assert age is not None and 4 < age < 60
