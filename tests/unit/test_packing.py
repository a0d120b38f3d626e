"""worker/packing.py: the key's partition is the one Kafka's Java clients (and aiokafka's
own partitioner) give it, whatever the key and the partition count."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.packing import Packer, murmur2

# Kafka's own Utils.murmur2 test vectors (clients/src/test/.../UtilsTest.java)
_JAVA = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_gives_kafkas_java_values() -> None:
    for key, java in _JAVA.items():
        assert murmur2(key) == java & 0xFFFFFFFF, key


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_murmur2_equals_aiokafkas(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.binary(max_size=80), max_size=30),
    count=st.integers(1, 64),
    other=st.integers(1, 64),
)
def test_a_key_lands_where_aiokafkas_partitioner_puts_it(
    keys: list[bytes], count: int, other: int
) -> None:
    packer = Packer()
    for partitions in (list(range(count)), list(range(other)), list(range(count))):
        for key in keys:
            want = DefaultPartitioner()(key, partitions, partitions)
            assert packer.partition(key, partitions, partitions) == want
