"""Messages into Kafka record batches, per partition, as the producer sends them: the
partition of a key by murmur2 (as Kafka's Java clients: a tag's outcomes land where
theirs would); one batch per partition, a full one sent and the next
begun (order within a partition holds); or one batch per message when each must stand
alone against the topic's max.message.bytes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from murmurhash2 import murmurhash2 as _murmurhash2

if TYPE_CHECKING:
    from worker.kafka import Message

#: Kafka's murmur2 seed (``org.apache.kafka.common.utils.Utils.murmur2``)
_SEED = 0x9747B28C


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``Utils.murmur2``, seed 0x9747b28c), equal to aiokafka's
    ``murmur2`` for every input (tests/unit/test_packing.py): the ``murmurhash2``
    package's compiled one, about a tenth of the CPU of one in Python (0.35 against
    4 to 5 µs per key), so that no memory of keys is needed: a drain of a history larger
    than any such memory computes it for most records."""
    return _murmurhash2(data, _SEED)


class Packer:
    """One producer's packing: holds the partitioner of messages without a key."""

    def __init__(self) -> None:
        self._partitioner = DefaultPartitioner()

    async def send_topic(
        self, producer: AIOKafkaProducer, topic: str, messages: list[Message], alone: bool
    ) -> list[asyncio.Future[Any]]:
        """Hand ``messages`` of one topic to ``producer`` as record batches; the futures
        of their acknowledgements."""
        partitions = sorted(await producer.partitions_for(topic))
        available = sorted(producer.client.cluster.available_partitions_for_topic(topic))
        futures: list[asyncio.Future[Any]] = []
        batches: dict[int, Any] = {}
        for message in messages:
            key, value, headers = message.key, message.value, message.headers
            partition = self.partition(key, partitions, available)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                # full: send it, and start the next one (order within the partition holds)
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    futures.append(
                        await producer.send(
                            topic, value, key=key, headers=headers, partition=partition
                        )
                    )
            if alone:
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                del batches[partition]
        for partition, batch in batches.items():
            if batch.record_count():
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    def partition(self, key: bytes | None, partitions: list[int], available: list[int]) -> int:
        """murmur2 of the key (as Kafka's Java clients: ``DefaultPartitioner``)."""
        if key is None:
            return int(self._partitioner(None, partitions, available or partitions))
        return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
