"""The trimmed decoder decides every record as the previous one did
(tests/helpers/decode_reference.py, kept only as the oracle): the same event, fingerprint
and problem — or the same 400 — for generated valid events in both content modes and
with every subject spelling, for events with any attribute or data member replaced by
any JSON value (the time and the source among them: what the change now parses once or
remembers), for content types and ``ce_*`` headers in any combination, and for any bytes.
The oracle decides every record through the pydantic models, never through the fast path
(worker/fastdecode.py), so these also hold the fast path to the models record by record.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import decode_reference as reference
from tests.helpers.strategies import cloud_events
from worker.decode import decode
from worker.events import RawRecord

LIMIT = 65_536
STRUCTURED = b"application/cloudevents+json"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
content_types = st.sampled_from(
    [
        None,
        b"",
        STRUCTURED,
        b"Application/CloudEvents+JSON; charset=utf-8",
        b"application/json",
        b" ; x",
        b"text/plain",
        b"\xff",
    ]
)
# what a subject may say of the tag in data: the same ID, a short form, another tag, the
# same letters in another case, junk
subjects = st.sampled_from(["same", "short", "other", "case", "junk", "nul", "absent"])
sources = st.sampled_from(
    [
        "https://registry.example.com/webhook",
        "/webhooks/harbor",
        "has space",
        "bare%zz",
        "",
        "urn:registry:quay",
    ]
)


def _subject(event: dict[str, Any], how: str) -> None:
    data = event["data"]
    repository, tag = data["repository"], data["tag"]
    if how == "absent":
        event.pop("subject", None)
        return
    event["subject"] = {
        "same": f"{repository}:{tag}",
        "short": f"{repository.removeprefix('docker.io/library/')}:{tag}",
        "other": f"{repository}:{tag}x",
        "case": f"{repository.upper()}:{tag.swapcase()}",
        "junk": "not an id",
        "nul": f"{repository}:{tag}\x00",
    }[how]


def _record(value: bytes | None, headers: tuple[tuple[str, bytes], ...]) -> RawRecord:
    return RawRecord("ocitag.events", 3, 1234, 1_700_000_000_000, None, value, headers)


def _structured(event: dict[str, Any], content_type: bytes | None) -> RawRecord:
    headers = () if content_type is None else (("content-type", content_type),)
    return _record(json.dumps(event).encode(), headers)


def _binary(event: dict[str, Any], content_type: bytes | None) -> RawRecord:
    headers = tuple(
        (f"ce_{name}", (value if isinstance(value, str) else json.dumps(value)).encode())
        for name, value in event.items()
        if name != "data"
    )
    if content_type is not None:
        headers += (("content-type", content_type),)
    return _record(json.dumps(event.get("data")).encode(), headers)


def _same(record: RawRecord) -> None:
    assert decode(record, LIMIT) == reference.decode(record, LIMIT)


@given(
    cloud_events(),
    subjects,
    st.booleans(),
    content_types,
    st.sampled_from(["ocitag.moved.v1", "ocitag.deleted.v1", "other.v1"]),
    sources,
)
def test_events_decide_as_before(
    event: dict[str, Any],
    subject: str,
    binary: bool,
    content_type: bytes | None,
    kind: str,
    source: str,
) -> None:
    _subject(event, subject)
    event["type"], event["source"] = kind, source
    if kind == "ocitag.deleted.v1":
        event["data"].pop("artifact")
    _same((_binary if binary else _structured)(event, content_type))


@given(cloud_events(), subjects, st.booleans(), st.booleans())
def test_subjects_decide_as_before(
    event: dict[str, Any], subject: str, binary: bool, deletion: bool
) -> None:
    _subject(event, subject)
    if deletion:
        event["type"] = "ocitag.deleted.v1"
        event["data"].pop("artifact")
    _same(_binary(event, b"application/json") if binary else _structured(event, STRUCTURED))


@given(
    cloud_events(),
    st.sampled_from(
        ["specversion", "id", "source", "type", "time", "subject", "data", "datacontenttype"]
    ),
    json_values | st.sampled_from(["2026-13-01T00:00:00Z", "2026-01-01T00:00:60Z", "x"]),
    st.booleans(),
)
def test_any_attribute_replaced_decides_as_before(
    event: dict[str, Any], name: str, value: Any, binary: bool
) -> None:
    event[name] = value
    _same(_binary(event, b"application/json") if binary else _structured(event, STRUCTURED))


@given(
    cloud_events(),
    st.sampled_from(
        ["repository", "tag", "artifact", "actor", "previous_artifact", "expected_version"]
    ),
    json_values,
    subjects,
)
def test_any_data_member_replaced_decides_as_before(
    event: dict[str, Any], name: str, value: Any, subject: str
) -> None:
    _subject(event, subject)
    event["data"][name] = value
    _same(_structured(event, STRUCTURED))


@given(
    st.one_of(st.none(), st.binary(max_size=200)),
    st.lists(
        st.tuples(
            st.sampled_from(["content-type", "ce_specversion", "ce_id", "ce_time", "x-other"]),
            st.binary(max_size=30) | content_types.filter(bool),
        ),
        max_size=6,
    ),
)
def test_any_bytes_and_headers_decide_as_before(
    value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> None:
    _same(_record(value, tuple((name, raw or b"") for name, raw in headers)))
