"""Dead letters on the real broker: a copy too large for the dead-letter topic keeps what
fits (at least where the record was and why) and never stops the worker — neither the
one running nor one restarted on a topic holding such a record."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.helpers.events import event
from tests.helpers.harness import Received, committed, running_worker, structured
from worker.settings import Settings

pytestmark = pytest.mark.integration

DLQ_LIMIT = 100_000
BIG_VALUE = b"\xff" + b"x" * 150_000  # not JSON, and over OCITAG_MAX_EVENT_BYTES: a 400
BIG_HEADER = ("trace", b"t" * 20_000)


async def create_topic(settings: Settings, name: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
    finally:
        await admin.close()


async def set_limit(settings: Settings, name: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.kafka_bootstrap_servers)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": str(limit)})
        await admin.alter_configs([resource])
    finally:
        await admin.close()


def check_trimmed(letter: Received, settings: Settings, offset: int) -> None:
    headers = dict(letter.headers)
    assert letter.key == b"big"
    assert letter.value is None  # the value alone is past the limit
    assert headers["trace"] == BIG_HEADER[1]  # the headers fit: kept
    assert headers["ocitag_dlq_topic"] == settings.topics.input_topic.encode()
    assert (headers["ocitag_dlq_partition"], headers["ocitag_dlq_offset"]) == (
        b"0",
        str(offset).encode(),
    )
    assert headers["ocitag_dlq_status"] == b"400"
    assert b"OCITAG_MAX_EVENT_BYTES" in headers["ocitag_dlq_reason"]
    assert headers["ocitag_dlq_value_omitted_bytes"] == str(len(BIG_VALUE)).encode()


async def test_a_worker_started_on_an_oversize_dead_letter_trims_it_and_goes_on(
    make_settings: Callable[..., Settings],
) -> None:
    """The record is on the topic before the worker starts, as after a crash on it."""
    settings = make_settings(topic_partitions=1)
    await create_topic(settings, settings.topics.dlq_topic, {"max.message.bytes": str(DLQ_LIMIT)})
    async with running_worker(settings) as worker:
        await worker.publish(
            [
                (b"big", BIG_VALUE, [BIG_HEADER]),
                structured(event("after-big")),
            ]
        )
        outcomes = await worker.outcomes(2)
        (letter,) = await worker.collect(settings.topics.dlq_topic, 1)
        assert worker.task is not None and not worker.task.done()
    assert [o.body["status"] for o in outcomes] == [400, 200]
    assert outcomes[1].body["causationid"] == "after-big"
    check_trimmed(letter, settings, 0)
    assert await committed(settings) == 2


async def test_a_dead_letter_topic_whose_limit_shrank_is_noticed_and_the_copy_trimmed(
    make_settings: Callable[..., Settings],
) -> None:
    """The limit read at start is stale: the broker's refusal makes the worker read it
    again and trim the copy to fit, instead of stopping."""
    settings = make_settings(topic_partitions=1)
    async with running_worker(settings) as worker:
        await worker.publish([structured(event("first"))])
        await worker.outcomes(1)
        await set_limit(settings, settings.topics.dlq_topic, DLQ_LIMIT)
        await worker.publish(
            [(b"big", BIG_VALUE, [BIG_HEADER]), structured(event("next", "2026-11-28T15:00:01Z"))]
        )
        outcomes = await worker.outcomes(3)
        (letter,) = await worker.collect(settings.topics.dlq_topic, 1)
        assert worker.task is not None and not worker.task.done()
    assert [o.body["status"] for o in outcomes] == [200, 400, 200]
    check_trimmed(letter, settings, 1)
    assert await committed(settings) == 3
