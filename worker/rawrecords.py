"""The bytes of a record the Kafka client cannot read, so that its dead letter keeps them.

aiokafka decodes every header key as UTF-8 while it reads a record batch and offers no
raw mode: one header key that is not UTF-8 makes the whole record unreadable. Here the
record's batch is fetched again as bytes (one Fetch request to the partition's leader)
and read leniently: key, value, timestamp and header values exactly as stored, header
keys decoded with ``surrogateescape`` so that their bytes survive.

What cannot be kept: a record in a batch that is corrupt (bad lengths), compressed with
a codec that fails, or in the legacy formats (v0/v1, which have no headers and never
fail this way) yields nothing, and the dead letter carries only where the record was and
why. A null header value is kept as empty bytes. Header keys that are not UTF-8 cannot
be written back as they were (Kafka clients write keys as UTF-8 text): the dead letter
escapes their bytes (see ``worker.deadletter``).

The v2 record batch format is read by hand (about forty lines) because aiokafka's own
reader is the one that fails; its varint and codec functions are reused.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

import structlog
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.util import decode_varint

from worker.settings import Settings

log = structlog.get_logger("worker.rawrecords")

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
_CODECS = {1: gzip_decode, 2: snappy_decode, 3: lz4_decode, 4: zstd_decode}
_LOG_APPEND_TIME = 0x08
_READ_COMMITTED = 1
READ_TIMEOUT_MS = 10_000


@dataclass(frozen=True, slots=True)
class RawParts:
    """What could be read of one record."""

    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def find_record(data: bytes, offset: int) -> RawParts | None:
    """The record at ``offset`` in a run of v2 record batches, or None when it is not
    there or cannot be read even leniently. Never raises."""
    try:
        return _find(memoryview(data), offset)
    except Exception:
        return None


def _find(data: memoryview, offset: int) -> RawParts | None:
    pos = 0
    while pos + _BATCH_HEADER.size <= len(data):
        (base, length, _, magic, _, attributes, last_delta, base_ts, max_ts, *_, count) = (
            _BATCH_HEADER.unpack_from(data, pos)
        )
        end = pos + 12 + length  # batchLength counts from after its own field
        if magic != 2 or end > len(data):
            return None
        if base <= offset <= base + last_delta:
            body = bytes(data[pos + _BATCH_HEADER.size : end])
            codec = attributes & 0x07
            if codec:
                body = _CODECS[codec](body)
            # the record's own timestamp, or the broker's when the topic sets it
            fixed = max_ts if attributes & _LOG_APPEND_TIME else None
            return _in_batch(bytearray(body), count, (base, offset), fixed, base_ts)
        pos = end
    return None


def _in_batch(
    buf: bytearray, count: int, where: tuple[int, int], fixed_ts: int | None, base_ts: int
) -> RawParts | None:
    base, offset = where
    pos = 0
    for _ in range(count):
        length, pos = decode_varint(buf, pos)
        end = pos + length
        pos += 1  # attributes: unused
        ts_delta, pos = decode_varint(buf, pos)
        offset_delta, pos = decode_varint(buf, pos)
        if base + offset_delta != offset:
            pos = end
            continue
        key, pos = _bytes(buf, pos)
        value, pos = _bytes(buf, pos)
        header_count, pos = decode_varint(buf, pos)
        headers = []
        for _ in range(header_count):
            name, pos = _bytes(buf, pos)
            header_value, pos = _bytes(buf, pos)
            headers.append(((name or b"").decode("utf-8", "surrogateescape"), header_value or b""))
        if pos != end:
            return None
        timestamp = fixed_ts if fixed_ts is not None else base_ts + ts_delta
        return RawParts(timestamp, key, value, tuple(headers))
    return None


def _bytes(buf: bytearray, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(buf, pos)
    if length < 0:
        return None, pos
    if pos + length > len(buf):
        raise ValueError("record field past the end of its batch")
    return bytes(buf[pos : pos + length]), pos + length


class RawFetcher:
    """Fetches the bytes around one offset of a partition, with a client of its own
    (started for the rare unreadable record, closed right after)."""

    def __init__(self, settings: Settings, options: dict[str, object]) -> None:
        self._settings = settings
        self._options = options

    async def read(self, tp: TopicPartition, offset: int) -> RawParts | None:
        """The record at ``offset``, as far as it can be read; None if it cannot be
        fetched or read (the dead letter then keeps only where it was and why)."""
        client = AIOKafkaClient(
            **self._options,
            client_id=f"{self._settings.kafka.group_id}-raw",
            request_timeout_ms=READ_TIMEOUT_MS,
        )
        try:
            async with asyncio.timeout(READ_TIMEOUT_MS / 1000 * 2):  # the loop waits on it
                return await self._fetch(client, tp, offset)
        except Exception as exc:  # the record stays rejected; only its copy is poorer
            log.warning("raw_fetch_failed", partition=tp.partition, offset=offset, error=str(exc))
            return None
        finally:
            await client.close()

    async def _fetch(
        self, client: AIOKafkaClient, tp: TopicPartition, offset: int
    ) -> RawParts | None:
        await client.bootstrap()
        cluster = await client.fetch_all_metadata()
        leader = cluster.leader_for_partition(tp)
        if leader is None or leader < 0:
            return None
        request = FetchRequest(
            0,
            1,
            self._settings.consumer.max_partition_fetch_bytes,
            _READ_COMMITTED,
            [
                (
                    tp.topic,
                    [(tp.partition, offset, self._settings.consumer.max_partition_fetch_bytes)],
                )
            ],
        )
        response = await client.send(leader, request)
        for _, partitions in response.topics:
            for _, error_code, _, *rest in partitions:
                if error_code == 0 and rest and rest[-1]:
                    return find_record(bytes(rest[-1]), offset)
        return None
