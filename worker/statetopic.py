"""The state topic at the edge (docs/subscribers.md): created compacted at the worker's
start with the input topic's partition count, and read back whole by ``ocitag-worker
state verify`` and ``state repair``. The records themselves are built and folded in
worker/state.py."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from worker.errors import FatalError
from worker.kafka import client_options, ensure_topics, partition_count, start_whole, topic_config
from worker.settings import Settings
from worker.state import TopicRecord

log = structlog.get_logger("worker.statetopic")


def state_topic_configs(settings: Settings) -> Mapping[str, str]:
    """The configuration of a state topic the worker creates.

    - ``cleanup.policy=compact``: the topic keeps the last record of every tag, whatever
      its age, and drops a tag whose last record is a tombstone;
    - ``min.compaction.lag.ms``: a record stays at least this long before compaction may
      drop it, so a reader (a subscriber, the api's watch resuming from a position)
      that is less than this far behind sees every change, not just the latest;
    - ``delete.retention.ms``: how long a tombstone stays after compaction reached it, so
      a reader reading from the beginning that takes less than this sees the deletion
      (else it could keep a deleted tag: the Kafka default is one day)."""
    topics = settings.topics
    return {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": str(topics.state_min_compaction_lag_ms),
        "delete.retention.ms": str(topics.state_delete_retention_ms),
    }


async def ensure_state_topic(settings: Settings) -> None:
    """Create the state topic if it is missing (with the input topic's partitions, so
    that a tag's records land in the partition of the same number as its events), or
    check that the existing one is compacted: a topic that deletes by age would lose the
    tags nobody touched lately. Nothing when OCITAG_STATE_TOPIC is empty (off)."""
    topic = settings.topics.state_topic
    if not topic:
        return
    partitions = await partition_count(settings, settings.topics.input_topic)
    created = await ensure_topics(
        settings, [topic], partitions=partitions, configs=state_topic_configs(settings)
    )
    if created:
        return
    policy = await topic_config(settings, topic, "cleanup.policy")
    policies = [p.strip() for p in policy.split(",")] if policy is not None else []
    if policy is not None and "compact" not in policies:
        raise FatalError(
            f"topic {topic} has cleanup.policy={policy}: the state topic must be compacted "
            "(kafka-configs --alter --add-config cleanup.policy=compact), or set "
            "OCITAG_STATE_TOPIC to another topic (empty turns it off)"
        )
    if "delete" in policies:  # compact,delete also deletes by age the untouched tags
        log.warning("state_topic_deletes_by_age", topic=topic, cleanup_policy=policy)
    if policy is None:
        log.warning("state_topic_policy_unknown", topic=topic)


async def read_state_topic(settings: Settings) -> list[TopicRecord]:
    """Every record (key, value, headers) of the state topic from the beginning up to its end
    offsets as they are when the read starts, in order per partition (a tag's records
    are all in one partition)."""
    topic = settings.topics.state_topic
    count = await partition_count(settings, topic)
    if not count:
        raise FatalError(f"topic {topic} does not exist: set OCITAG_STATE_TOPIC")
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        client_id="ocitag-worker-state-verify",
    )
    try:
        await start_whole(consumer.start, consumer.stop)
        partitions = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[TopicRecord] = []
        pending = {tp for tp in partitions if ends[tp] > 0}
        for tp in partitions:
            if tp in pending and await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)  # compacted down to nothing before the end offset
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1_000)
            for tp, messages in batches.items():
                records.extend(
                    (m.key, m.value, tuple(m.headers or ()))
                    for m in messages
                    if m.offset < ends[tp]
                )
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return records
    finally:
        await consumer.stop()
