"""Dead letters: the copy keeps the record and says where and why; a copy too large for
the dead-letter topic keeps what fits (always the coordinates and the reason) and says
what it left out; header keys that are not UTF-8 are escaped, never lost."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.deadletter import MAX_REASON_BYTES, _size, dead_letter, truncate_utf8
from worker.decode import decode
from worker.events import RawRecord, Undecodable
from worker.problems import Problem, ProblemKind

REQUIRED = {
    "ocitag_dlq_topic",
    "ocitag_dlq_partition",
    "ocitag_dlq_offset",
    "ocitag_dlq_status",
    "ocitag_dlq_reason",
}
PROBLEM = Problem(ProblemKind.UNDECODABLE, "record value is not valid UTF-8")


def test_dead_letter_keeps_the_record_and_says_where_and_why() -> None:
    raw = RawRecord("in", 2, 41, 0, b"key", b"\xff", (("trace", b"t"),))
    decoded = decode(raw, 1024)
    assert isinstance(decoded, Undecodable)
    topic, key, value, headers = dead_letter(raw, decoded.problem, "dlq", 1_000_000)
    found = dict(headers)
    assert (topic, key, value, found["trace"]) == ("dlq", b"key", b"\xff", b"t")
    assert (
        found["ocitag_dlq_topic"],
        found["ocitag_dlq_partition"],
        found["ocitag_dlq_offset"],
    ) == (b"in", b"2", b"41")
    assert found["ocitag_dlq_status"] == b"400" and b"UTF-8" in found["ocitag_dlq_reason"]
    assert not [name for name in found if "omitted" in name]


def test_the_value_goes_first_then_the_largest_headers_then_the_key() -> None:
    headers = (("small", b"s"), ("big", b"b" * 20_000), ("mid", b"m" * 5_000))
    raw = RawRecord("in", 0, 7, 0, b"k" * 3_000, b"v" * 150_000, headers)

    _, key, value, out = dead_letter(raw, PROBLEM, "dlq", 100_000)
    found = dict(out)
    assert value is None and key == raw.key and found["big"] == b"b" * 20_000
    assert found["ocitag_dlq_value_omitted_bytes"] == b"150000"

    _, key, value, out = dead_letter(raw, PROBLEM, "dlq", 12_000)
    found = dict(out)
    assert "big" not in found and found["mid"] == b"m" * 5_000 and key == raw.key
    assert found["ocitag_dlq_headers_omitted"] == b"1"

    _, key, value, out = dead_letter(raw, PROBLEM, "dlq", 2_000)
    found = dict(out)
    assert key is None and found["ocitag_dlq_key_omitted_bytes"] == b"3000"
    assert found["ocitag_dlq_headers_omitted"] == b"3"
    assert found.keys() >= REQUIRED


def test_non_utf8_header_keys_are_escaped_and_counted() -> None:
    raw = RawRecord("in", 0, 1, 0, b"k", b"v", (("\udcff\udcfe", b"1"), ("ok", b"2")), "bad key")
    _, _, _, out = dead_letter(raw, PROBLEM, "dlq", 1_000_000)
    found = dict(out)
    assert found["\\xff\\xfe"] == b"1" and found["ok"] == b"2"
    assert found["ocitag_dlq_escaped_header_keys"] == b"1"


@given(
    key=st.none() | st.binary(max_size=3000),
    value=st.none() | st.binary(max_size=20_000),
    headers=st.lists(st.tuples(st.text(max_size=30), st.binary(max_size=4000)), max_size=6),
    limit=st.integers(min_value=2048, max_value=40_000),
    detail=st.text(max_size=3000),
)
def test_a_dead_letter_fits_whenever_its_coordinates_and_reason_do(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]],
    limit: int,
    detail: str,
) -> None:
    raw = RawRecord("in", 3, 12345, 0, key, value, tuple(headers))
    problem = Problem(ProblemKind.UNDECODABLE, detail)
    _, k, v, out = dead_letter(raw, problem, "dlq", limit)
    found = dict(out)
    assert found.keys() >= REQUIRED
    assert len(found["ocitag_dlq_reason"]) <= MAX_REASON_BYTES
    assert _size(k, v, out) <= limit


def test_truncation_never_splits_a_character() -> None:
    cut = truncate_utf8("é" * 10, 5)
    assert cut == "éé".encode()
    cut.decode("utf-8")
