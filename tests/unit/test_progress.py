"""The progress gauges (worker/progress.py): what they say, and that the poll loop's
request after every poll refreshes them at most every REFRESH_SECONDS."""

from __future__ import annotations

from aiokafka import TopicPartition

from tests.helpers.fakes import TOPIC, FakeConsumer
from worker import metrics
from worker.batches import Batch
from worker.events import RawRecord
from worker.progress import REFRESH_SECONDS, Progress

P0 = TopicPartition(TOPIC, 0)


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
