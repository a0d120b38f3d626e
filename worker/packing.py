"""Messages into Kafka record batches, per partition, as the producer sends them: the
partition of a key by murmur2 (as Kafka's Java clients: a tag's outcomes land where
theirs would), remembered per key; one batch per partition, a full one sent and the next
begun (order within a partition holds); or one batch per message when each must stand
alone against the topic's max.message.bytes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

if TYPE_CHECKING:
    from worker.kafka import Message

#: keys whose partition is remembered, before the memory is emptied and starts again
REMEMBERED_KEYS = 100_000


class Packer:
    """One producer's packing: holds the murmur2 partitioner and its memory of keys."""

    def __init__(self) -> None:
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[tuple[bytes, int], int] = {}

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
        """murmur2 of the key (as Kafka's Java clients), remembered per key: it is pure
        Python and a tag's key comes back again and again."""
        if key is None:
            return int(self._partitioner(None, partitions, available or partitions))
        cache_key = (key, len(partitions))
        found = self._partitions.get(cache_key)
        if found is None:
            if len(self._partitions) >= REMEMBERED_KEYS:
                self._partitions.clear()
            found = self._partitions[cache_key] = int(
                self._partitioner(key, partitions, partitions)
            )
        return found
