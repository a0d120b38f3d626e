"""Messages into Kafka record batches, per partition, as the producer sends them: the
partition of a key by murmur2 (as Kafka's Java clients: a tag's outcomes land where
theirs would), remembered per key; one batch per partition, a full one sent and the next
begun (order within a partition holds); or one batch per message when each must stand
alone against the topic's max.message.bytes."""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

if TYPE_CHECKING:
    from worker.kafka import Message

#: keys whose partition is remembered, before the memory is emptied and starts again
REMEMBERED_KEYS = 100_000
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``, seed 0x9747b28c),
    equal to aiokafka's ``murmur2`` for every input (tests/unit/test_packing.py) at half
    its CPU: the key's 4-byte words read by ``struct`` (little-endian, as Java reads
    them) rather than byte by byte, and no mask where the value is already 32 bits.
    Hand-written because neither aiokafka nor a maintained package has a C one, and a
    drain of a history larger than the memory of keys computes it for most records
    (13 µs per 63-byte key in aiokafka's, 6 here)."""
    length = len(data)
    h = 0x9747B28C ^ length
    end = length & ~3
    for (word,) in _WORDS.iter_unpack(data[:end]):
        k = (word * _M) & _MASK
        h = ((h * _M) & _MASK) ^ (((k ^ (k >> 24)) * _M) & _MASK)
    extra = length & 3
    if extra >= 3:
        h ^= data[end + 2] << 16
    if extra >= 2:
        h ^= data[end + 1] << 8
    if extra >= 1:
        h = ((h ^ data[end]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


class Packer:
    """One producer's packing: holds the murmur2 partitioner and its memory of keys."""

    def __init__(self) -> None:
        self._partitioner = DefaultPartitioner()
        #: partition count → key → partition
        self._partitions: dict[int, dict[bytes, int]] = {}

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
        """murmur2 of the key (as Kafka's Java clients: ``DefaultPartitioner``), remembered
        per key and partition count: a tag's key comes back again and again."""
        if key is None:
            return int(self._partitioner(None, partitions, available or partitions))
        count = len(partitions)
        known = self._partitions.get(count)
        if known is None:
            known = self._partitions[count] = {}
        found = known.get(key)
        if found is None:
            if len(known) >= REMEMBERED_KEYS:
                known.clear()
            found = known[key] = partitions[(murmur2(key) & 0x7FFFFFFF) % count]
        return found
