"""Reading what can be read of a record batch the Kafka client rejects."""

from __future__ import annotations

import struct

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from hypothesis import given
from hypothesis import strategies as st

from worker.rawrecords import find_record


def batch(records: list[tuple[bytes | None, bytes | None]], compression: int = 0) -> bytes:
    """A record batch whose header keys ZQ are made not UTF-8 (b"ZQ" → b"\\xff\\xfe")."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1_000_000,
    )
    for offset, (key, value) in enumerate(records):
        builder.append(
            offset,
            timestamp=1000 + offset,
            key=key,
            value=value,
            headers=[("ZQ", b"1"), ("ok", b"2")],
        )
    buf = bytearray(builder.build())
    if compression == 0:
        buf = bytearray(bytes(buf).replace(b"ZQ", b"\xff\xfe"))
        struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])))
    return bytes(buf)


def test_the_record_at_an_offset_is_read_with_its_bytes() -> None:
    data = batch([(b"k0", b"v0"), (b"k1", b"v1"), (None, None)])
    one = find_record(data, 1)
    assert one is not None
    assert (one.timestamp_ms, one.key, one.value) == (1001, b"k1", b"v1")
    assert one.headers[0][0].encode("utf-8", "surrogateescape") == b"\xff\xfe"
    assert one.headers[1] == ("ok", b"2")
    last = find_record(data, 2)
    assert last is not None and (last.key, last.value) == (None, None)
    assert find_record(data, 3) is None


def test_compressed_batches_are_read() -> None:
    data = batch([(b"k", b"v" * 1000)], compression=1)  # gzip
    found = find_record(data, 0)
    assert found is not None and found.value == b"v" * 1000


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=5))
def test_garbage_never_raises(data: bytes, offset: int) -> None:
    find_record(data, offset)


def test_a_truncated_batch_yields_nothing() -> None:
    data = batch([(b"k", b"v" * 100)])
    assert find_record(data[:-10], 0) is None
