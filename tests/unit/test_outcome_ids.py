"""Outcome ids (worker/outcomes.py ``outcome_id``, ``record_outcome_id``): one id is one
set of bytes, and a redelivery of a record gets its outcome's id again.

An outcome that is stored (200, 404, 412, 422, a superseded 409) keeps the id of the
input's (source, id) and content: its replay is byte-identical whichever record carries
it. One built from its record alone (400, a reused id's 409, 500) names the record in
``data.instance``, so its id comes from the record's coordinates, bytes and problem
type: two records sharing a (source, id) get two ids."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.strategies import cloud_events
from worker.decision import decide
from worker.decode import decode
from worker.events import Invalid, RawRecord, TagDeleted, TagMoved, Undecodable
from worker.history import ImmutableTags
from worker.outcomes import (
    _NAMESPACE,
    Outcome,
    OutcomeContext,
    decision_outcome,
    id_reused_outcome,
    internal_outcome,
    outcome_id,
    record_outcome_id,
    undecodable_outcome,
)
from worker.plan import Item
from worker.problems import ProblemKind

CTX = OutcomeContext(
    "urn:ocitag-worker:test", "https://ocitag-worker.dev/problems/", ImmutableTags(())
)
AT = datetime(2026, 12, 6, 21, 0, 0, 123456, tzinfo=UTC)
STRUCTURED = (("content-type", b"application/cloudevents+json"),)
HEX = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
HEX2 = "d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35"


def record(value: bytes, partition: int = 4, offset: int = 14, topic: str = "t") -> RawRecord:
    return RawRecord(topic, partition, offset, 1_700_000_000_000, None, value, STRUCTURED)


def body(event_id: str = "reuse-1", artifact: str = HEX, **envelope: Any) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "urn:interop",
            "type": "ocitag.moved.v1",
            "time": "2026-12-06T20:00:00Z",
            "data": {"repository": "istio/pilot", "tag": "1.3.0", "artifact": artifact},
            **envelope,
        }
    ).encode()


def not_stored(raw: RawRecord) -> list[Outcome]:
    """Every outcome built from ``raw`` alone: its 400, or its reused id's 409 and 500."""
    decoded = decode(raw, 65_536)
    if isinstance(decoded, Undecodable):
        return [undecodable_outcome(CTX, raw, decoded)]
    item = Item(raw, decoded)
    return [id_reused_outcome(CTX, item, AT), internal_outcome(CTX, item, "refused")]


def ident(outcome: Outcome) -> str:
    found = json.loads(outcome.value)["id"]
    assert isinstance(found, str)
    return found


# ---- the function itself


def test_record_outcome_ids_are_rfc_4122_uuid5_of_coordinates_bytes_and_type() -> None:
    raw = record(b"\xff", partition=2, offset=9, topic="ocitag.events")
    digest = hashlib.sha256(b"\xff").hexdigest()
    name = f"urn:kafka:ocitag.events:2:9\n{digest}\nundecodable"
    assert record_outcome_id(raw, ProblemKind.UNDECODABLE) == str(uuid.uuid5(_NAMESPACE, name))


@given(source=st.text(), event_id=st.text(), fingerprint=st.binary(min_size=32, max_size=32))
def test_stored_outcome_ids_are_rfc_4122_uuid5_of_source_id_and_content(
    source: str, event_id: str, fingerprint: bytes
) -> None:
    """The version and variant are set on the hex digits (every value of the variant's
    digit comes up): the same text as ``uuid.uuid5``."""
    name = f"{source}\n{event_id}\n{fingerprint.hex()}"
    assert outcome_id(source, event_id, fingerprint) == str(uuid.uuid5(_NAMESPACE, name))


@dataclass(frozen=True)
class Pair:
    name: str
    a: RawRecord
    b: RawRecord
    same: bool


PAIRS = [
    Pair("a redelivery", record(body()), record(body()), same=True),
    Pair("another offset", record(body()), record(body(), offset=15), same=False),
    Pair("another partition", record(body()), record(body(), partition=5), same=False),
    Pair("another topic", record(body()), record(body(), topic="u"), same=False),
    Pair("other bytes there", record(body()), record(body(artifact=HEX2)), same=False),
    Pair("no value", record(b""), RawRecord("t", 4, 14, 0, None, None, ()), same=True),
]


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p.name)
@pytest.mark.parametrize("kind", [ProblemKind.UNDECODABLE, ProblemKind.ID_REUSED])
def test_the_record_decides_the_id(pair: Pair, kind: ProblemKind) -> None:
    assert (record_outcome_id(pair.a, kind) == record_outcome_id(pair.b, kind)) is pair.same


def test_one_record_gets_one_id_per_problem_type() -> None:
    """A 500, then on redelivery a 409 once another record took the id: two outcomes."""
    raw = record(body())
    ids = {record_outcome_id(raw, kind) for kind in ProblemKind}
    assert len(ids) == len(ProblemKind)


# ---- the outcomes: the interop pass's case, each kind of outcome not stored


def reused(raw: RawRecord) -> Outcome:
    return not_stored(raw)[0]


def internal(raw: RawRecord) -> Outcome:
    return not_stored(raw)[1]


def rejected(raw: RawRecord) -> Outcome:
    (outcome,) = not_stored(raw)
    return outcome


BUILDS = [
    pytest.param(reused, body(artifact=HEX2), id="409 id-reused"),
    pytest.param(internal, body(), id="500"),
    pytest.param(rejected, body(type="ocitag.unknown.v1"), id="400 with source and id"),
    pytest.param(rejected, b"\xff", id="400 without"),
]


@pytest.mark.parametrize(("build", "value"), BUILDS)
def test_two_records_same_content_two_ids_redelivery_same_bytes(
    build: Callable[[RawRecord], Outcome], value: bytes
) -> None:
    first, second = build(record(value, offset=14)), build(record(value, offset=15))
    assert json.loads(first.value)["data"]["instance"] == "urn:kafka:t:4:14"
    assert json.loads(second.value)["data"]["instance"] == "urn:kafka:t:4:15"
    assert ident(first) != ident(second)
    again = build(record(value, offset=14))
    assert (ident(again), again.value) == (ident(first), first.value)


def test_stored_outcomes_keep_the_input_id_whichever_record_carries_them() -> None:
    """Unchanged: a duplicate's republished outcome is the first one, byte for byte."""
    outcomes = []
    for offset in (14, 15):
        raw = record(body(), offset=offset)
        decoded = decode(raw, 65_536)
        assert isinstance(decoded, TagMoved)
        outcomes.append(decision_outcome(CTX, Item(raw, decoded), decide(None, decoded), AT))
        assert ident(outcomes[-1]) == outcome_id("urn:interop", "reuse-1", decoded.fingerprint)
    assert ident(outcomes[0]) == ident(outcomes[1])


# ---- over random records: one id, one set of bytes


SOURCES = st.sampled_from(["urn:a", "urn:b"])
IDS = st.sampled_from(["1", "2", "3"])


@st.composite
def values(draw: st.DrawFn) -> bytes:
    """A record's bytes: a tag event from a small pool of (source, id) so that ids are
    reused across records, an undecodable CloudEvent with a (source, id), or garbage."""
    shape = draw(st.sampled_from(["event", "unknown-type", "garbage"]))
    if shape == "garbage":
        return draw(st.binary(max_size=40))
    event = {**draw(cloud_events()), "source": draw(SOURCES), "id": draw(IDS)}
    if shape == "unknown-type":
        event["type"] = "ocitag.unknown.v1"
    return json.dumps(event).encode()


@given(
    st.lists(values(), min_size=1, max_size=4),
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 5), st.integers(0, 3)),
        min_size=1,
        max_size=12,
        unique_by=lambda r: (r[0], r[1]),
    ),
    st.lists(st.integers(0, 11), max_size=6),
)
def test_one_id_is_one_set_of_bytes_over_random_records(
    pool: list[bytes], records: list[tuple[int, int, int]], redelivered: list[int]
) -> None:
    """Records at distinct coordinates, some with the same bytes, some delivered again."""
    raws = [record(pool[i % len(pool)], partition, offset) for partition, offset, i in records]
    # a redelivery is the same record (coordinates and bytes) once more
    deliveries = raws + [raws[i % len(raws)] for i in redelivered]
    by_id: dict[str, set[bytes]] = {}
    stored_ids: set[str] = set()
    for raw in deliveries:
        for outcome in not_stored(raw):
            by_id.setdefault(ident(outcome), set()).add(outcome.value)
        decoded = decode(raw, 65_536)
        if isinstance(decoded, TagMoved | TagDeleted | Invalid):
            stored_ids.add(outcome_id(decoded.source, decoded.id, decoded.fingerprint))
    assert all(len(values) == 1 for values in by_id.values()), by_id
    # one outcome per record and kind: redeliveries add no id
    assert len(by_id) == sum(len(not_stored(raw)) for raw in raws)
    # and none is the id of a stored outcome (a 500's, once redelivered and applied)
    assert not stored_ids & by_id.keys()
