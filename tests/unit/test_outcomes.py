"""Outcome building (worker/outcomes.py) without PostgreSQL: every status, table-driven,
from real decoded records and real decisions; each outcome is checked against the
published schemas and read by the CloudEvents SDK; replays are byte-identical and ids
deterministic; properties over generated events and records."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.cloudevents_sdk import sdk_errors
from tests.helpers.contract import errors_of, schema_validator
from tests.helpers.strategies import cloud_events, histories
from worker.decision import Applied, Rejected, TagRecord, decide
from worker.decode import decode
from worker.events import Invalid, RawRecord, TagDeleted, TagEvent, TagMoved, Undecodable
from worker.history import ImmutableTags
from worker.outcomes import (
    STORED_CHANGES,
    STORED_FINGERPRINT_BYTES,
    Outcome,
    OutcomeContext,
    RecordRows,
    batch_outcomes,
    decision_outcome,
    internal_outcome,
    invalid_outcome,
    outcome_id,
    processed_row,
    record_outcome_id,
    repeat_outcome,
    replayable,
    replayed,
    undecodable_outcome,
)
from worker.plan import Item, ProcessedRow, Superseded
from worker.problems import ProblemKind

#: release tags unflagged: 1.3.0 moving is the ordinary case here (test_repointed flags it)
CTX = OutcomeContext(
    "urn:ocitag-worker:test", "https://ocitag-worker.dev/problems/", ImmutableTags(())
)
HEX = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
HEX2 = "d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35"
SOURCE = "https://registry.example.com/webhook"
TAG = "docker.io/istio/pilot:1.3.0"
AT = datetime(2026, 11, 28, 16, 0, 0, 123456, tzinfo=UTC)
RECORD_MS = 1_700_000_000_000
STRUCTURED = (("content-type", b"application/cloudevents+json"),)


def event(event_id: str = "e1", time: str = "2026-11-28T15:00:00Z", **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": "ocitag.moved.v1",
        "time": time,
        "data": {"repository": "istio/pilot", "tag": "1.3.0", "artifact": HEX, **data},
    }


def deletion(
    event_id: str = "d1", time: str = "2026-11-28T15:00:00Z", **data: Any
) -> dict[str, Any]:
    body = {**event(event_id, time), "type": "ocitag.deleted.v1"}
    body["data"] = {"repository": "istio/pilot", "tag": "1.3.0", **data}
    return body


def raw(value: bytes | None, offset: int = 7, headers: Any = STRUCTURED) -> RawRecord:
    return RawRecord("ocitag.events", 3, offset, RECORD_MS, None, value, headers)


def item(body: dict[str, Any], offset: int = 7) -> Item:
    decoded = decode(raw(json.dumps(body).encode(), offset), 65_536)
    assert isinstance(decoded, TagMoved | TagDeleted | Invalid), decoded
    return Item(raw(json.dumps(body).encode(), offset), decoded)


def moved(body: dict[str, Any]) -> TagMoved:
    found = item(body).event
    assert isinstance(found, TagMoved)
    return found


def stored(artifact: str = HEX, version: int = 1, time: str = "2026-11-28T14:00:00Z") -> TagRecord:
    applied = decide(None, moved(event("first", time, artifact=artifact)))
    assert isinstance(applied, Applied)
    return replace(applied.record, version=version)


def undecodable(value: bytes | None, headers: Any = STRUCTURED) -> Outcome:
    record = raw(value, headers=headers)
    decoded = decode(record, 65_536)
    assert isinstance(decoded, Undecodable)
    return undecodable_outcome(CTX, record, decoded)


def decided(stored_record: TagRecord | None, body: dict[str, Any]) -> Outcome:
    it = item(body)
    assert isinstance(it.event, TagMoved | TagDeleted)
    return decision_outcome(CTX, it, decide(stored_record, it.event), AT)


def id_reused() -> Outcome:
    first = item(event("e1"))
    again = item(event("e1", artifact=HEX2), offset=8)
    first_outcome = decided(None, event("e1"))
    return repeat_outcome(CTX, again, first.event.fingerprint, AT, first_outcome)


@dataclass(frozen=True)
class Case:
    name: str
    build: Any  # () -> Outcome
    status: int
    #: change (200) or problem slug
    what: str
    subject: str | None
    causation: bool = True


CASES = [
    Case("created", lambda: decided(None, event()), 200, "created", TAG),
    Case("updated", lambda: decided(stored(HEX2), event("e2")), 200, "updated", TAG),
    Case("unchanged", lambda: decided(stored(), event("e2")), 200, "unchanged", TAG),
    Case(
        "superseded",
        lambda: decided(stored(time="2026-11-28T15:00:01Z"), event("e2")),
        409,
        "superseded",
        TAG,
    ),
    Case("id-reused", id_reused, 409, "id-reused", TAG),
    Case("deleted", lambda: decided(stored(), deletion()), 200, "deleted", TAG),
    Case("not-found, never seen", lambda: decided(None, deletion()), 404, "not-found", TAG),
    Case(
        "not-found, already deleted",
        lambda: decided(
            replace(stored(), deleted_on=AT - timedelta(days=1), deleted_by="x"), deletion()
        ),
        404,
        "not-found",
        TAG,
    ),
    Case(
        "superseded deletion",
        lambda: decided(stored(time="2026-11-28T15:00:01Z"), deletion()),
        409,
        "superseded",
        TAG,
    ),
    Case(
        "invalid deletion data (an artifact)",
        lambda: invalid_outcome(CTX, item(deletion(artifact=HEX)), AT),
        422,
        "invalid-data",
        TAG,
    ),
    Case(
        "precondition-failed",
        lambda: decided(stored(), event("e2", "2026-11-28T15:00:01Z", expected_version=3)),
        412,
        "precondition-failed",
        TAG,
    ),
    Case(
        "invalid-data",
        lambda: invalid_outcome(CTX, item(event(artifact="sha256:xyz")), AT),
        422,
        "invalid-data",
        TAG,
    ),
    Case(
        "invalid-data, nothing names a tag",
        lambda: invalid_outcome(CTX, item(event(tag="-bad")), AT),
        422,
        "invalid-data",
        None,
    ),
    Case(
        "invalid-data, the subject names the tag",
        lambda: invalid_outcome(CTX, item({**event(tag="-bad"), "subject": "istio/x:1"}), AT),
        422,
        "invalid-data",
        "docker.io/istio/x:1",
    ),
    Case("undecodable", lambda: undecodable(b"\xff"), 400, "undecodable", None, False),
    Case("tombstone", lambda: undecodable(None), 400, "undecodable", None, False),
    Case(
        "unknown type, data names the tag",
        lambda: undecodable(json.dumps({**event(), "type": "x.y"}).encode()),
        400,
        "unknown-type",
        TAG,
    ),
    Case(
        "invalid envelope, subject names the tag",
        lambda: undecodable(
            json.dumps({**event(), "time": "later", "subject": "istio/x:1", "data": 1}).encode()
        ),
        400,
        "invalid-envelope",
        "docker.io/istio/x:1",
    ),
    Case(
        "binary body not JSON, ce_subject names the tag",
        lambda: undecodable(
            b"{",
            (
                ("ce_specversion", b"1.0"),
                ("ce_id", b"b1"),
                ("ce_subject", TAG.encode()),
                ("content-type", b"application/json"),
            ),
        ),
        400,
        "undecodable",
        TAG,
        False,
    ),
    Case(
        "internal",
        lambda: internal_outcome(CTX, item(event()), "value too long"),
        500,
        "internal",
        TAG,
    ),
]


def _body(outcome: Outcome) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(outcome.value)
    return parsed


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_status_is_built_as_the_contract_says(case: Case) -> None:
    outcome: Outcome = case.build()
    body = _body(outcome)
    assert (outcome.status, body["status"]) == (case.status, case.status)
    if case.status == 200:
        kind = "removed" if case.what == "deleted" else "updated"
        assert (body["type"], body["change"], outcome.change) == (
            f"ocitag.{kind}.v1",
            case.what,
            case.what,
        )
        assert body["datacontenttype"] == "application/json"
        assert body["data"]["repository"] == "docker.io/istio/pilot"
        assert errors_of(schema_validator(f"outcome-{kind}.schema.json"), body) == []
    else:
        assert body["type"] == "ocitag.rejected.v1"
        assert body["datacontenttype"] == "application/problem+json"
        assert body["data"]["type"] == CTX.problem_base_uri + case.what
        assert body["data"]["instance"].startswith("urn:kafka:ocitag.events:3:")
        assert outcome.change is None
        assert errors_of(schema_validator("outcome-rejected.schema.json"), body) == []
    assert body.get("subject") == case.subject
    assert outcome.key == (case.subject.encode() if case.subject else None)
    assert ("causationid" in body, "causationsource" in body) == (case.causation,) * 2
    if case.causation:
        assert body["causationsource"] == SOURCE
    assert body["source"] == CTX.worker_source
    # never null: an attribute with no value is left out
    assert [name for name, value in body.items() if value is None] == []
    assert sdk_errors(outcome.key, outcome.value, outcome.headers) == []
    # nothing of the moment it is built enters it
    assert case.build() == outcome


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_outcomes_not_stored_are_timed_by_their_record(case: Case) -> None:
    """400 and 500 are rebuilt on redelivery: their time is the record's timestamp; the
    others are stored and timed at processing."""
    body = _body(case.build())
    expected = (
        "2023-11-14T22:13:20Z" if case.status in {400, 500} else "2026-11-28T16:00:00.123456Z"
    )
    assert body["time"] == expected


def test_the_published_schemas_refuse_null_attributes() -> None:
    """Left out, never null: the schemas say so too (CloudEvents SDKs reject null)."""
    rejected = _body(undecodable(b"\xff"))
    updated = _body(decided(None, event()))
    for name in ("subject", "causationid", "causationsource"):
        for check, body in (
            ("outcome-rejected.schema.json", rejected),
            ("outcome-updated.schema.json", updated),
        ):
            assert errors_of(schema_validator(check), {**body, name: None}), (check, name)


def test_a_duplicate_gets_the_first_outcome_byte_for_byte() -> None:
    first = item(event())
    # the same event, spelled by another client, delivered at another offset
    again = item(event(time="2026-11-28T15:00:00.000000+00:00"), offset=99)
    first_outcome = decided(None, event())
    replay = repeat_outcome(CTX, again, first.event.fingerprint, AT, first_outcome)
    assert replay.value == first_outcome.value and replay.key == first_outcome.key
    assert (replay.status, replay.replay, replay.change) == (200, True, "created")
    row = ProcessedRow(first.event.fingerprint, AT, 200, first_outcome.key, first_outcome.value)
    assert replayed(CTX, again, row) == Outcome(
        first_outcome.key, first_outcome.value, 200, "created", True
    )


@pytest.mark.parametrize(
    ("stored_record", "body", "change"),
    [
        (None, event(), "created"),
        (stored(HEX2), event(), "updated"),
        (stored(HEX), event(), "unchanged"),
        (stored(HEX2), deletion(), "deleted"),
        (None, event(artifact="x"), None),  # a rejection has no change
    ],
)
def test_a_replay_carries_the_change_its_outcome_says(
    stored_record: TagRecord | None, body: dict[str, Any], change: str | None
) -> None:
    """Counted by it (ocitag_outcomes_total{change, replay="true"}): a replayed 200 says
    what the first one said, whichever way the record keeps it (rebuilt or as bytes)."""
    first = item(body)
    decision = None if isinstance(first.event, Invalid) else decide(stored_record, first.event)
    outcome = (
        invalid_outcome(CTX, first, AT)
        if decision is None
        else decision_outcome(CTX, first, decision, AT)
    )
    assert outcome.change == change
    again = item(body, offset=99)
    assert repeat_outcome(CTX, again, first.event.fingerprint, AT, outcome).change == change
    row = processed_row(CTX, first, decision, outcome, AT)
    as_bytes = ProcessedRow(first.event.fingerprint, AT, outcome.status, outcome.key, outcome.value)
    for kept in (row, as_bytes):
        replay = replayed(CTX, again, kept)
        assert (replay.value, replay.change, replay.replay) == (outcome.value, change, True)


def test_a_rebuilt_200_is_the_first_outcome_byte_for_byte() -> None:
    """The record keeps no bytes of a move's 200: a repeat (spelled otherwise, in the
    other content mode, under another worker source) rebuilds the very same bytes."""
    first = item(event())
    creation = decide(None, moved(event()))
    first_outcome = decision_outcome(CTX, first, creation, AT)
    row = processed_row(CTX, first, creation, first_outcome, AT)
    assert row.outcome is None and row.change == "created" and row.created_on is None
    assert len(row.fingerprint) == STORED_FINGERPRINT_BYTES
    again = item(event(time="2026-11-28T15:00:00.000000+00:00"), offset=99)
    later = replace(CTX, worker_source="urn:ocitag-worker:renamed")
    assert replayable(again, row)
    rebuilt = replayed(later, again, row)
    assert (rebuilt.key, rebuilt.value, rebuilt.status, rebuilt.replay) == (
        first_outcome.key, first_outcome.value, 200, True,
    )  # fmt: skip
    # an update keeps the record's creation, which the repeat does not carry
    assert isinstance(creation, Applied)
    update_event = moved(event("e2", artifact=HEX2, time="2026-11-28T15:30:00Z"))
    update = decide(creation.record, update_event)
    update_item = item(event("e2", artifact=HEX2, time="2026-11-28T15:30:00Z"), offset=5)
    update_outcome = decision_outcome(CTX, update_item, update, AT)
    update_row = processed_row(CTX, update_item, update, update_outcome, AT)
    assert update_row.created_on == creation.record.created_on
    assert replayed(CTX, update_item, update_row).value == update_outcome.value
    # other content under the same id is not a replay
    assert not replayable(item(event(artifact=HEX2)), row)


def binary_item(body: dict[str, Any], offset: int) -> Item:
    """``body`` delivered in binary content mode (attributes in ce_ headers)."""
    headers = [(f"ce_{k}", str(v).encode()) for k, v in body.items() if k != "data"]
    record = raw(
        json.dumps(body["data"]).encode(), offset, [*headers, ("content-type", b"application/json")]
    )
    decoded = decode(record, 65_536)
    assert isinstance(decoded, TagMoved | TagDeleted) and decoded.binary, decoded
    return Item(record, decoded)


@pytest.mark.parametrize(
    ("newer", "body"),
    [
        (stored(HEX2, version=3, time="2026-11-28T15:30:00Z"), event()),  # a live row
        (stored(HEX2, version=3, time="2026-11-28T15:30:00Z"), deletion()),
        (  # a tombstone: "already deleted"
            replace(
                stored(HEX2, version=3, time="2026-11-28T15:30:00Z"),
                deleted_on=datetime(2026, 11, 28, 15, 30, tzinfo=UTC),
                deleted_by="carol",
            ),
            event(),
        ),
    ],
)
@pytest.mark.parametrize("first_binary", [False, True])
def test_a_rebuilt_409_superseded_is_the_first_outcome_byte_for_byte(
    newer: TagRecord, body: dict[str, Any], first_binary: bool
) -> None:
    """The record keeps no bytes of a late event's 409 (migration 0006): a repeat in the
    other content mode, spelled otherwise, at another offset, under another worker source
    and problem base, after the tag moved on again, rebuilds the very same bytes."""
    first = binary_item(body, 7) if first_binary else item(body)
    assert isinstance(first.event, TagMoved | TagDeleted)
    decision = decide(newer, first.event)
    assert isinstance(decision, Rejected) and decision.newer == newer
    first_outcome = decision_outcome(CTX, first, decision, AT)
    assert first_outcome.status == 409
    row = processed_row(CTX, first, decision, first_outcome, AT)
    assert (row.outcome, row.outcome_key, row.change) == (None, None, None)
    assert row.superseded is not None and row.superseded.binary == first_binary
    spelled = {**body, "time": "2026-11-28T15:00:00.000000+00:00"}
    again = item(spelled, offset=99) if first_binary else binary_item(spelled, 99)
    later = OutcomeContext("urn:ocitag-worker:renamed", "https://example.com/other-problems/")
    assert replayable(again, row)
    rebuilt = replayed(later, again, row)
    assert (rebuilt.key, rebuilt.value, rebuilt.status, rebuilt.change, rebuilt.replay) == (
        first_outcome.key, first_outcome.value, 409, None, True,
    )  # fmt: skip
    # other content under the same id is not a replay
    assert not replayable(item({**body, "time": "2026-11-28T15:00:01Z"}), row)


@given(
    on=st.datetimes(timezones=st.just(UTC)),
    texts=st.tuples(st.text(), st.text(), st.text()),
    flags=st.tuples(st.booleans(), st.booleans()),
)
def test_what_rebuilds_a_409_round_trips_through_its_column(
    on: datetime, texts: tuple[str, str, str], flags: tuple[bool, bool]
) -> None:
    kept = Superseded(on, texts[0], texts[1], flags[0], flags[1], texts[2])
    again = Superseded.from_bytes(kept.to_bytes())
    assert again == kept and again.on.utcoffset() == timedelta(0)


def test_rejections_keep_their_bytes() -> None:
    bad = item(event("bad", artifact="x"))
    outcome = invalid_outcome(CTX, bad, AT)
    row = processed_row(CTX, bad, None, outcome, AT)
    assert (row.outcome, row.outcome_key, row.change) == (outcome.value, outcome.key, None)
    assert replayed(CTX, bad, row).value == outcome.value


def test_an_id_reuse_is_timed_at_the_first_processing_so_it_replays_identically() -> None:
    reuse = id_reused()
    body = _body(reuse)
    assert body["time"] == "2026-11-28T16:00:00.123456Z"
    assert body["data"]["errors"][0]["location"] == "body.id"
    assert reuse.value == id_reused().value


def test_stored_outcome_ids_depend_on_source_id_and_content_only() -> None:
    a = _body(decided(None, event()))
    later = decision_outcome(
        CTX, item(event(), offset=50), decide(None, moved(event())), AT + timedelta(days=1)
    )
    assert _body(later)["id"] == a["id"]
    assert a["id"] == outcome_id(SOURCE, "e1", moved(event()).fingerprint)
    assert _body(decided(None, event(artifact=HEX2)))["id"] != a["id"]
    assert _body(decided(None, event("e2")))["id"] != a["id"]
    # a 400 (not stored): from the record's coordinates, bytes and problem type
    assert _body(undecodable(b"\xff"))["id"] == record_outcome_id(
        raw(b"\xff"), ProblemKind.UNDECODABLE
    )
    assert _body(undecodable(b"\xfe"))["id"] != record_outcome_id(
        raw(b"\xff"), ProblemKind.UNDECODABLE
    )


def test_a_batch_gets_one_outcome_per_item_in_order() -> None:
    """New items decided now, duplicates of them, repeats of earlier batches (replay or
    id reuse), and a 422, in one batch."""
    items = [
        item(event("a")),
        item(event("a"), offset=8),  # duplicate in the batch
        item(event("bad", artifact="x"), offset=9),  # 422
        item(event("a", artifact=HEX2), offset=10),  # id reused in the batch
        item(event("old"), offset=11),  # processed by an earlier batch
        item(event("old", artifact=HEX2), offset=12),  # id of an earlier batch reused
    ]
    earlier_outcome = b'{"stored":"as it was"}'
    earlier = {
        (SOURCE, "old"): ProcessedRow(
            items[4].event.fingerprint, AT - timedelta(hours=1), 200, b"k", earlier_outcome
        )
    }
    event_a = items[0].event
    assert isinstance(event_a, TagMoved)
    out = batch_outcomes(
        CTX,
        items,
        new=[0, 2],
        decisions={0: decide(None, event_a)},
        earlier=earlier,
        processed_at=AT,
    )
    assert [(o.status, o.replay) for o in out] == [
        (200, False),
        (200, True),
        (422, False),
        (409, False),
        (200, True),
        (409, False),
    ]
    assert out[1].value == out[0].value
    assert out[4].value == earlier_outcome
    assert _body(out[3])["time"] == "2026-11-28T16:00:00.123456Z"
    assert _body(out[5])["time"] == "2026-11-28T15:00:00.123456Z"  # the earlier batch's


def test_a_new_kind_of_rejection_needs_no_new_builder() -> None:
    """A decision is Applied or Rejected(problem): any problem kind maps to an outcome."""
    from worker.problems import Problem

    for kind in ProblemKind:
        outcome = decision_outcome(CTX, item(event()), Rejected(Problem(kind, "why")), AT)
        assert _body(outcome)["data"]["type"].endswith("/" + kind.slug)
        assert outcome.status == kind.status


@given(cloud_events())
def test_generated_events_give_outcomes_every_reader_takes(body: dict[str, Any]) -> None:
    record = raw(json.dumps(body).encode())
    decoded = decode(record, 65_536)
    assert isinstance(decoded, TagMoved)
    it = Item(record, decoded)
    for outcome in (
        decision_outcome(CTX, it, decide(None, decoded), AT),
        internal_outcome(CTX, it, "refused"),
    ):
        parsed = _body(outcome)
        assert outcome.key == decoded.ocitag_id.encode() == parsed["subject"].encode()
        assert None not in parsed.values()
        assert sdk_errors(outcome.key, outcome.value, outcome.headers) == []


@given(
    st.one_of(st.none(), st.binary(max_size=200), cloud_events().map(json.dumps).map(str.encode)),
    st.lists(
        st.tuples(
            st.sampled_from(["ce_specversion", "ce_id", "ce_subject", "content-type", "x"]),
            st.binary(max_size=40),
        ),
        max_size=4,
    ),
)
def test_any_record_gets_an_outcome_every_reader_takes(
    value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    record = raw(value, headers=tuple(headers))
    decoded = decode(record, 65_536)
    if isinstance(decoded, Undecodable):
        outcome = undecodable_outcome(CTX, record, decoded)
    else:
        outcome = internal_outcome(CTX, Item(record, decoded), "refused")
    parsed = _body(outcome)
    assert None not in parsed.values()
    check = "outcome-rejected.schema.json"
    assert errors_of(schema_validator(check), parsed) == []
    assert sdk_errors(outcome.key, outcome.value, outcome.headers) == []


@given(history=histories())
def test_every_rebuilt_outcome_of_a_history_is_the_first_one(history: list[TagMoved]) -> None:
    """Whatever a tag went through (creations, updates, supersedes, preconditions), the
    record's compact form replays each first outcome byte for byte."""
    rows: dict[tuple[str, str], TagRecord] = {}
    for offset, tag_event in enumerate(history):
        raw_record = RawRecord("ocitag.events", 0, offset, 0, None, b"", ())
        first = Item(raw_record, tag_event)
        tag = (tag_event.repository, tag_event.tag)
        decision = decide(rows.get(tag), tag_event)
        outcome = decision_outcome(CTX, first, decision, AT)
        row = processed_row(CTX, first, decision, outcome, AT)
        again = Item(replace(raw_record, offset=offset + 1000), tag_event)
        assert replayable(again, row)
        assert replayed(CTX, again, row).value == outcome.value
        if isinstance(decision, Applied):
            rows[tag] = decision.record


def test_a_removed_outcome_shows_the_record_as_it_was_and_the_new_version() -> None:
    before = stored(HEX2, version=4)
    body = _body(decided(before, deletion(actor="carol")))
    assert (body["resourceversion"], body["change"]) == (5, "deleted")
    assert body["data"] == before.as_ocitag()  # last modified by the move, not "carol"


def _records_of_rows(
    rows: list[tuple[bytes, ProcessedRow]], source_ref: int
) -> list[tuple[Any, ...]]:
    """The write's records as the store built them from ``processed_row``'s rows (before
    ``RecordRows``): the reference the rows built directly are held to."""
    return [
        (
            key,
            row.fingerprint,
            row.status,
            STORED_CHANGES[row.change] if row.change is not None else None,
            row.version,
            row.created_on,
            row.created_by,
            source_ref if row.worker_source is not None else None,
            row.outcome_key,
            row.outcome,
            row.superseded.to_bytes() if row.superseded is not None else None,
        )
        for key, row in rows
    ]


@given(history=histories(), binary=st.lists(st.booleans(), min_size=30, max_size=30))
def test_the_records_rows_keep_what_processed_row_keeps(
    history: list[TagEvent], binary: list[bool]
) -> None:
    """``RecordRows`` (the store's records, built directly) gives what ``processed_row``
    keeps: every kind of record (rebuilt 200s, superseded 409s in either content mode,
    deletions, 404s, 412s, re-pointed release tags kept as bytes, a 422) field for
    field."""
    ctx = OutcomeContext(CTX.worker_source, CTX.problem_base_uri, ImmutableTags.parse("a"))
    tags: dict[tuple[str, str], TagRecord] = {}
    fast = RecordRows(7)
    rows: list[tuple[bytes, ProcessedRow]] = []
    for offset, generated in enumerate(history):
        tag_event = replace(generated, binary=binary[offset])
        first = Item(RawRecord("ocitag.events", 0, offset, 0, None, b"", ()), tag_event)
        tag = (tag_event.repository, tag_event.tag)
        decision = decide(tags.get(tag), tag_event)
        outcome = decision_outcome(ctx, first, decision, AT)
        key = offset.to_bytes(16, "big")
        fast.add(key, first, decision, outcome)
        rows.append((key, processed_row(ctx, first, decision, outcome, AT)))
        if decision.recorded is not None:
            tags[tag] = decision.recorded
    bad = item(event("bad", artifact="x"))
    bad_outcome = invalid_outcome(ctx, bad, AT)
    fast.add(b"\x00" * 16, bad, None, bad_outcome)
    rows.append((b"\x00" * 16, processed_row(ctx, bad, None, bad_outcome, AT)))
    assert fast.rows == _records_of_rows(rows, 7)
