"""Input that must not stop the worker or its partition, and failures that must not let
it commit past unprocessed records — on the real broker and database."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import datetime

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

from tests.helpers.events import event
from tests.helpers.harness import committed, running_worker, structured
from worker.outcomes import Outcome
from worker.plan import Item
from worker.settings import Settings
from worker.store import Store

pytestmark = pytest.mark.integration


def crafted_batch(value: bytes) -> bytes:
    """A record batch the broker accepts but the client cannot read: a header key that
    is not UTF-8. (A batch with a broken codec payload would be one too, but Kafka 4
    validates those on produce; the worker depends on every codec Kafka has.)"""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1_000_000,
    )
    builder.append(
        0,
        timestamp=None,
        key=b"k",
        value=value,
        headers=[("ZQ", b"1"), ("content-type", b"application/cloudevents+json")],
    )
    buf = bytearray(builder.build())
    at = buf.find(b"ZQ")
    buf[at : at + 2] = b"\xff\xfe"
    struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])))
    return bytes(buf)


async def send_raw(bootstrap: str, topic: str, raw: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        batch.append(key=b"k", value=b"x", timestamp=None, headers=[])
        batch.close()
        batch._build = lambda: raw  # the crafted bytes go out as they are
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


async def test_a_record_the_client_cannot_read_is_rejected_alone(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(topic_partitions=1)
    async with running_worker(settings) as worker:
        await worker.publish(
            [structured(event("before-1")), structured(event("before-2", "2026-11-28T15:00:01Z"))]
        )
        await send_raw(
            settings.kafka.kafka_bootstrap_servers,
            settings.topics.input_topic,
            crafted_batch(b"{}"),
        )
        await worker.publish([structured(event("after", "2026-11-28T15:00:02Z"))])
        outcomes = await worker.outcomes(4)
        dead = await worker.collect(settings.topics.dlq_topic, 1)
    assert [o.body.get("causationid") for o in outcomes] == ["before-1", "before-2", None, "after"]
    assert [o.body["status"] for o in outcomes] == [200, 200, 400, 200]
    problem = outcomes[2].body["data"]
    assert problem["instance"] == f"urn:kafka:{settings.topics.input_topic}:0:2"
    assert "could not read this record" in problem["detail"]
    letter = dead[0]
    headers = dict(letter.headers)
    assert headers["ocitag_dlq_offset"] == b"2"
    # what the client could not read is kept: key, value, the readable header as it
    # was, the one with a non-UTF-8 key with its bytes escaped (and named as such)
    assert (letter.key, letter.value) == (b"k", b"{}")
    assert headers["content-type"] == b"application/cloudevents+json"
    assert headers["\\xff\\xfe"] == b"1"
    assert headers["ocitag_dlq_escaped_header_keys"] == b"1"
    assert await committed(settings) == 4


async def test_a_failing_batch_never_lets_a_later_one_commit(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in one batch stops the worker; what follows it is not committed either."""
    settings = make_settings(topic_partitions=1, max_batch_records=1)
    real = Store.apply

    async def apply(self: Store, items: Sequence[Item], processed_at: datetime) -> list[Outcome]:
        if any(item.event.id == "boom" for item in items):
            raise RuntimeError("a bug")
        return await real(self, items, processed_at)

    monkeypatch.setattr(Store, "apply", apply)

    async def run_until_it_stops() -> None:
        async with running_worker(settings) as worker:
            await worker.publish([structured(event("ok-1"))])
            await worker.outcomes(1)
            later = ["boom", "ok-2", "ok-3"]
            await worker.publish(
                [structured(event(n, f"2026-11-28T15:00:0{i}Z")) for i, n in enumerate(later, 1)]
            )
            assert worker.task is not None
            await worker.task

    with pytest.raises(RuntimeError, match="a bug"):
        await run_until_it_stops()
    assert await committed(settings) == 1
