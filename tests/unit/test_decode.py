"""Decoding and validation: every rule of docs/contract.md "Identifiers" and "Input",
table-driven, and properties over generated input (never raises; valid events accepted
and round-trip)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import ErrorDetails

from tests.helpers.contract import pydantic_phrases
from tests.helpers.strategies import cloud_events
from worker.decode import decode, fingerprint
from worker.events import Invalid, RawRecord, TagDeleted, TagMoved, Undecodable
from worker.identifiers import normalize_digest, normalize_repository
from worker.models import EventAttributes, rule_message
from worker.problems import ProblemKind
from worker.timefmt import parse_rfc3339

HEX = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
STRUCTURED = (("content-type", b"application/cloudevents+json"),)
LIMIT = 65_536


def event(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "https://registry.example.com/webhook",
        "type": "ocitag.moved.v1",
        "time": "2026-11-28T15:12:02Z",
        "data": {"repository": "docker.io/istio/pilot", "tag": "1.3.0", "artifact": HEX},
    }
    for key, value in changes.items():
        if value is _DROP:
            base.pop(key)
        else:
            base[key] = value
    return base


def data(**changes: Any) -> dict[str, Any]:
    base = dict(event()["data"])
    for key, value in changes.items():
        if value is _DROP:
            base.pop(key)
        else:
            base[key] = value
    return base


_DROP: Any = object()


def record(value: bytes | None, headers: tuple[tuple[str, bytes], ...] = STRUCTURED) -> RawRecord:
    return RawRecord("ocitag.events", 3, 1234, 1_700_000_000_000, None, value, headers)


def structured(body: Any) -> RawRecord:
    return record(json.dumps(body).encode())


def binary(body: dict[str, Any]) -> RawRecord:
    headers = (
        *tuple((f"ce_{k}", str(v).encode()) for k, v in body.items() if k != "data"),
        ("content-type", b"application/json"),
    )
    return record(json.dumps(body["data"]).encode(), headers)


def test_valid_structured_event_is_accepted_and_normalised() -> None:
    decoded = decode(
        structured(event(data=data(repository="istio/pilot", artifact="sha256:" + HEX))), LIMIT
    )
    assert isinstance(decoded, TagMoved)
    assert (decoded.repository, decoded.tag, decoded.artifact) == (
        "docker.io/istio/pilot",
        "1.3.0",
        HEX,
    )
    assert decoded.actor == "https://registry.example.com/webhook"  # defaults to the source
    assert decoded.ocitag_id == "docker.io/istio/pilot:1.3.0"


def test_binary_and_structured_modes_are_the_same_event() -> None:
    body = event(subject="docker.io/istio/pilot:1.3.0", data=data(actor="alice"))
    a, b = decode(structured(body), LIMIT), decode(binary(body), LIMIT)
    assert isinstance(a, TagMoved)
    assert a == b


def test_extensions_are_ignored_but_content_changes_the_fingerprint() -> None:
    plain = decode(structured(event()), LIMIT)
    extended = decode(structured(event(traceparent="00-abc", myext=1)), LIMIT)
    other = decode(structured(event(data=data(tag="1.3.1"))), LIMIT)
    assert (
        isinstance(plain, TagMoved)
        and isinstance(extended, TagMoved)
        and isinstance(other, TagMoved)
    )
    assert plain.fingerprint == extended.fingerprint != other.fingerprint


@pytest.mark.parametrize(
    ("rec", "kind", "location"),
    [
        (record(b"\xff\xfe{}"), ProblemKind.UNDECODABLE, "body"),
        (record(b"{not json"), ProblemKind.UNDECODABLE, "body"),
        (record(b'{"a": NaN}'), ProblemKind.UNDECODABLE, "body"),
        (record(b"[1, 2]"), ProblemKind.UNDECODABLE, "body"),
        (record(b"[" * 50_000), ProblemKind.UNDECODABLE, "body"),
        (record(None), ProblemKind.UNDECODABLE, "body"),
        (
            record(b"{}", (("content-type", b"text/plain"),)),
            ProblemKind.UNDECODABLE,
            "headers.content-type",
        ),
        (record(b"x" * (LIMIT + 1)), ProblemKind.TOO_LARGE, "body"),
        (structured(event(specversion="0.3")), ProblemKind.INVALID_ENVELOPE, "body.specversion"),
        (structured(event(specversion=1.0)), ProblemKind.INVALID_ENVELOPE, "body.specversion"),
        (structured(event(id=_DROP)), ProblemKind.INVALID_ENVELOPE, "body.id"),
        (structured(event(id="")), ProblemKind.INVALID_ENVELOPE, "body.id"),
        (structured(event(id="x" * 257)), ProblemKind.INVALID_ENVELOPE, "body.id"),
        (structured(event(id=7)), ProblemKind.INVALID_ENVELOPE, "body.id"),
        (structured(event(source="")), ProblemKind.INVALID_ENVELOPE, "body.source"),
        (structured(event(source="has space")), ProblemKind.INVALID_ENVELOPE, "body.source"),
        (structured(event(source="bad%zz")), ProblemKind.INVALID_ENVELOPE, "body.source"),
        (structured(event(type="com.example.other")), ProblemKind.UNKNOWN_TYPE, "body.type"),
        (structured(event(time=_DROP)), ProblemKind.INVALID_ENVELOPE, "body.time"),
        (structured(event(time="2026-11-28")), ProblemKind.INVALID_ENVELOPE, "body.time"),
        (structured(event(time="2026-11-28T15:12:02")), ProblemKind.INVALID_ENVELOPE, "body.time"),
        (
            structured(event(datacontenttype="text/xml")),
            ProblemKind.INVALID_ENVELOPE,
            "body.datacontenttype",
        ),
        (binary(event(id="")), ProblemKind.INVALID_ENVELOPE, "headers.ce_id"),
        (binary(event(time="noon")), ProblemKind.INVALID_ENVELOPE, "headers.ce_time"),
        (record(b"{not json", (("ce_specversion", b"1.0"),)), ProblemKind.UNDECODABLE, "body"),
        (
            record(b"{}", (("ce_specversion", b"\xff"),)),
            ProblemKind.UNDECODABLE,
            "headers.ce_specversion",
        ),
    ],
)
def test_not_a_decodable_cloudevent_is_400(
    rec: RawRecord, kind: ProblemKind, location: str
) -> None:
    decoded = decode(rec, LIMIT)
    assert isinstance(decoded, Undecodable)
    assert decoded.problem.kind is kind
    assert decoded.problem.status == 400
    assert location in [item.location for item in decoded.problem.errors]
    assert all(item.message for item in decoded.problem.errors)


def test_every_broken_envelope_rule_is_listed() -> None:
    decoded = decode(structured(event(specversion="2", id="", time="later")), LIMIT)
    assert isinstance(decoded, Undecodable)
    assert {i.location for i in decoded.problem.errors} == {
        "body.specversion",
        "body.id",
        "body.time",
    }


@pytest.mark.parametrize(
    ("body", "location", "words"),
    [
        (event(data=_DROP), "body.data", "is required"),
        (event(data=[1]), "body.data", "JSON object"),
        (event(data=data(repository=_DROP)), "body.data.repository", "is required"),
        (event(data=data(repository="Istio/Pilot")), "body.data.repository", "lower-case"),
        (
            event(data=data(repository="ghcr.io/" + "a" * 300)),
            "body.data.repository",
            "at most 255",
        ),
        (event(data=data(repository="istio/pilot:1")), "body.data.repository", "tag"),
        (event(data=data(repository=5)), "body.data.repository", "must be a string"),
        (event(data=data(tag=".x")), "body.data.tag", "must match"),
        (event(data=data(tag="x" * 129)), "body.data.tag", "at most 128"),
        (event(data=data(artifact=HEX.upper())), "body.data.artifact", "lower-case"),
        (event(data=data(artifact="sha256:" + HEX[:10])), "body.data.artifact", "64"),
        (event(data=data(artifact="sha1:" + HEX)), "body.data.artifact", "sha256 or sha512"),
        (event(data=data(previous_artifact="nope")), "body.data.previous_artifact", "64"),
        (
            event(data=data(expected_version=-1)),
            "body.data.expected_version",
            "must be 0 or more",
        ),
        (event(data=data(expected_version="1")), "body.data.expected_version", "integer"),
        (event(data=data(expected_version=True)), "body.data.expected_version", "integer"),
        (event(data=data(actor="")), "body.data.actor", "must not be empty"),
        (event(data=data(actor="a\x00b")), "body.data.actor", "NUL"),
        (event(data=data(colour="blue")), "body.data.colour", "unknown members"),
        (event(subject="docker.io/istio/pilot:9.9"), "body.subject", "must name the tag"),
        (event(subject="not a tag"), "body.subject", "OCITag ID"),
    ],
)
def test_data_rule_broken_is_422_naming_field_and_rule(
    body: dict[str, Any], location: str, words: str
) -> None:
    decoded = decode(structured(body), LIMIT)
    assert isinstance(decoded, Invalid)
    assert decoded.problem.kind is ProblemKind.INVALID_DATA and decoded.problem.status == 422
    item = next(i for i in decoded.problem.errors if i.location == location)
    assert words in item.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


# One row per kind of pydantic error that can reach a problem: each in the project's
# words after the member's location, none in pydantic's ("Input should be …").
@pytest.mark.parametrize(
    ("body", "location", "message"),
    [
        (event(time=_DROP), "body.time", "is required"),  # missing
        (event(specversion="0.3"), "body.specversion", "must be '1.0'"),  # literal_error
        (event(id=""), "body.id", "must not be empty"),  # string_too_short
        (event(source=""), "body.source", "must not be empty"),
        (event(id="x" * 257), "body.id", "must be at most 256 characters"),  # string_too_long
        (event(time=5), "body.time", "must be a string"),  # string_type
        (event(subject=5), "body.subject", "must be a string"),
        (event(data=data(tag=None)), "body.data.tag", "must be a string"),
        (event(data=data(artifact=12)), "body.data.artifact", "must be a string"),
        (event(data=data(actor="")), "body.data.actor", "must not be empty"),
        (event(data=data(actor="x" * 257)), "body.data.actor", "must be at most 256 characters"),
        (
            event(data=data(expected_version=1.5)),
            "body.data.expected_version",
            "must be an integer",
        ),
        (
            event(data=data(expected_version=-1)),  # greater_than_equal
            "body.data.expected_version",
            "must be 0 or more",
        ),
        (
            event(data=data(expected_version=2**63)),  # less_than_equal
            "body.data.expected_version",
            "must be 9223372036854775807 or less",
        ),
        (
            event(data=data(artifact="sha256:abcdefabcdef")),  # value_error: already ours
            "body.data.artifact",
            "sha256 digest must be 64 lower-case hex characters (got 12)",
        ),
        (
            event(data=data(colour="blue")),  # extra_forbidden
            "body.data.colour",
            "is not a member of tag-moved data (unknown members are rejected)",
        ),
    ],
)
def test_each_broken_rule_is_in_the_projects_words(
    body: dict[str, Any], location: str, message: str
) -> None:
    decoded = decode(structured(body), LIMIT)
    assert isinstance(decoded, Invalid | Undecodable)
    assert [(i.location, i.message) for i in decoded.problem.errors] == [(location, message)]
    assert decoded.problem.detail.endswith(f"rule: {location} {message}")


@given(
    st.dictionaries(
        st.sampled_from(["specversion", "id", "source", "type", "time", "subject"]),
        json_values,
        max_size=3,
    ),
    st.dictionaries(
        st.sampled_from(["repository", "tag", "artifact", "actor", "expected_version"]),
        json_values,
        max_size=3,
    ),
)
def test_no_problem_speaks_pydantic(attributes: dict[str, Any], members: dict[str, Any]) -> None:
    decoded = decode(structured({**event(data={**data(), **members}), **attributes}), LIMIT)
    if isinstance(decoded, Invalid | Undecodable):
        text = decoded.problem.detail + " ".join(i.message for i in decoded.problem.errors)
        assert not pydantic_phrases(text), text


def test_an_error_type_no_model_raises_is_named_not_quoted() -> None:
    """A model rule added later without words of its own still reads as ours."""
    error: ErrorDetails = {
        "type": "url_parsing",
        "loc": ("source",),
        "msg": "Input should be a valid URL",
        "input": "x",
    }
    assert rule_message(error) == "breaks the rule url_parsing"


def test_every_broken_data_rule_is_listed_with_its_value() -> None:
    decoded = decode(
        structured(event(data={"repository": "A//b", "tag": "-", "artifact": "x", "extra": 1})),
        LIMIT,
    )
    assert isinstance(decoded, Invalid)
    found = {i.location: i.value for i in decoded.problem.errors}
    assert found == {
        "body.data.repository": "A//b",
        "body.data.tag": "-",
        "body.data.artifact": "x",
        "body.data.extra": 1,
    }


def test_subject_may_be_given_in_short_form() -> None:
    decoded = decode(structured(event(subject="istio/pilot:1.3.0")), LIMIT)
    assert isinstance(decoded, TagMoved)


def test_large_offending_values_are_shortened() -> None:
    decoded = decode(structured(event(data=data(actor="x" * 10_000))), LIMIT)
    assert isinstance(decoded, Invalid)
    (item,) = decoded.problem.errors
    assert isinstance(item.as_json()["value"], str) and len(item.as_json()["value"]) <= 201


def test_binary_data_error_location_is_the_body() -> None:
    decoded = decode(binary(event(data=data(tag="-"))), LIMIT)
    assert isinstance(decoded, Invalid)
    assert [i.location for i in decoded.problem.errors] == ["body.tag"]


@given(cloud_events())
def test_generated_valid_events_are_accepted_and_round_trip(body: dict[str, Any]) -> None:
    decoded = decode(structured(body), LIMIT)
    assert isinstance(decoded, TagMoved), decoded
    d = body["data"]
    assert decoded.repository == normalize_repository(d["repository"])
    assert decoded.artifact == normalize_digest(d["artifact"])
    assert decoded.time == parse_rfc3339(body["time"])
    # the canonical form is a fixed point: publishing it again decodes to the same event
    again = dict(body, data=dict(d, repository=decoded.repository, artifact=decoded.artifact))
    redecoded = decode(structured(again), LIMIT)
    assert isinstance(redecoded, TagMoved)
    assert (redecoded.repository, redecoded.tag, redecoded.artifact) == (
        decoded.repository,
        decoded.tag,
        decoded.artifact,
    )
    assert decode(binary(body), LIMIT) == decoded


header_names = st.sampled_from(
    [
        "content-type",
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "x",
    ]
)


@given(
    st.one_of(st.none(), st.binary(max_size=300)),
    st.lists(st.tuples(header_names, st.binary(max_size=40)), max_size=8),
)
def test_arbitrary_bytes_and_headers_always_give_a_decision(
    value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    decoded = decode(record(value, tuple(headers)), LIMIT)
    assert isinstance(decoded, TagMoved | Invalid | Undecodable)
    if isinstance(decoded, Undecodable | Invalid):
        assert decoded.problem.detail


@given(
    cloud_events(),
    st.sampled_from(["specversion", "id", "source", "type", "time", "subject", "data"]),
    json_values,
)
def test_any_attribute_replaced_by_any_json_gives_a_decision(
    body: dict[str, Any], name: str, value: Any
) -> None:
    decoded = decode(structured(dict(body, **{name: value})), LIMIT)
    assert isinstance(decoded, TagMoved | Invalid | Undecodable)


@given(
    cloud_events(),
    st.sampled_from(
        ["repository", "tag", "artifact", "actor", "previous_artifact", "expected_version"]
    ),
    json_values,
)
def test_any_data_member_replaced_by_any_json_gives_a_decision(
    body: dict[str, Any], name: str, value: Any
) -> None:
    decoded = decode(structured(dict(body, data=dict(body["data"], **{name: value}))), LIMIT)
    assert isinstance(decoded, TagMoved | Invalid | Undecodable)


def test_400_outcomes_name_the_cause_when_id_and_source_are_known() -> None:
    unknown = decode(structured(event(type="com.example.other")), LIMIT)
    bad_time = decode(structured(event(time="noon")), LIMIT)
    bad_id = decode(structured(event(id="")), LIMIT)
    assert isinstance(unknown, Undecodable) and (unknown.source, unknown.id) == (
        "https://registry.example.com/webhook",
        "evt-1",
    )
    assert isinstance(bad_time, Undecodable) and bad_time.id == "evt-1"
    assert isinstance(bad_id, Undecodable) and (bad_id.source, bad_id.id) == (None, None)


def test_binary_mode_is_remembered_for_problem_locations() -> None:
    decoded = decode(binary(event()), LIMIT)
    assert isinstance(decoded, TagMoved) and decoded.binary
    assert decoded.attribute_location("time") == "headers.ce_time"
    assert decoded.data_location("expected_version") == "body.expected_version"


# ---- ocitag.deleted.v1


def deletion(**data_changes: Any) -> dict[str, Any]:
    body = event(type="ocitag.deleted.v1", data=data(artifact=_DROP))
    for key, value in data_changes.items():
        if value is _DROP:
            body["data"].pop(key)
        else:
            body["data"][key] = value
    return body


@pytest.mark.parametrize("to_record", [structured, binary], ids=["structured", "binary"])
def test_a_deletion_decodes_in_both_modes(to_record: Any) -> None:
    body = deletion(repository="istio/pilot", actor="carol", expected_version=3)
    body["subject"] = "docker.io/istio/pilot:1.3.0"
    decoded = decode(to_record(body), LIMIT)
    assert isinstance(decoded, TagDeleted)
    assert (decoded.ocitag_id, decoded.actor, decoded.expected_version) == (
        "docker.io/istio/pilot:1.3.0",
        "carol",
        3,
    )
    assert decoded.binary is (to_record is binary)
    assert decoded == decode(structured(body), LIMIT)  # the same event in either mode


def test_a_deletion_and_a_move_with_the_same_id_differ_in_content() -> None:
    moved, deleted = decode(structured(event()), LIMIT), decode(structured(deletion()), LIMIT)
    assert isinstance(moved, TagMoved) and isinstance(deleted, TagDeleted)
    assert moved.fingerprint != deleted.fingerprint  # same (source, id): a reuse, 409


@pytest.mark.parametrize(
    ("body", "locations", "message"),
    [
        (deletion(artifact=HEX), ["body.data.artifact"], "is not a member of tag-deleted data"),
        (deletion(colour="red"), ["body.data.colour"], "is not a member of tag-deleted data"),
        (deletion(tag=_DROP), ["body.data.tag"], "is required"),
        (
            deletion(repository="Bad Repo", previous_artifact="sha256:xyz"),
            ["body.data.repository", "body.data.previous_artifact"],
            "",
        ),
        (deletion(expected_version=-1), ["body.data.expected_version"], "must be 0 or more"),
        (deletion(actor=""), ["body.data.actor"], "must not be empty"),
        ({**deletion(), "data": "x"}, ["body.data"], "must be a JSON object"),
        (
            {k: v for k, v in deletion().items() if k != "data"},
            ["body.data"],
            "the tag-deleted data object",
        ),
        ({**deletion(), "subject": "docker.io/other:1"}, ["body.subject"], "must name the tag"),
    ],
)
def test_broken_deletion_data_is_422_naming_each_member(
    body: dict[str, Any], locations: list[str], message: str
) -> None:
    decoded = decode(structured(body), LIMIT)
    assert isinstance(decoded, Invalid), decoded
    assert decoded.problem.kind is ProblemKind.INVALID_DATA
    assert [e.location for e in decoded.problem.errors] == locations
    assert message in decoded.problem.errors[0].message
    assert decoded.problem.detail.startswith("the tag-deleted data breaks")


def test_binary_deletion_with_an_artifact_names_the_body_member() -> None:
    decoded = decode(binary(deletion(artifact=HEX)), LIMIT)
    assert isinstance(decoded, Invalid)
    assert [(e.location, e.value) for e in decoded.problem.errors] == [("body.artifact", HEX)]
    assert decoded.subject == "docker.io/istio/pilot:1.3.0"


def test_other_types_are_still_unknown() -> None:
    decoded = decode(structured(event(type="ocitag.removed.v1")), LIMIT)
    assert isinstance(decoded, Undecodable)
    assert decoded.problem.kind is ProblemKind.UNKNOWN_TYPE
    assert "ocitag.deleted.v1" in decoded.problem.errors[0].message


# ---- content is compared by meaning, not spelling (the fingerprint)


def _print(body: dict[str, Any], mode: Any = None) -> bytes:
    decoded = decode((mode or structured)(body), LIMIT)
    assert isinstance(decoded, TagMoved | Invalid), decoded
    return decoded.fingerprint


@pytest.mark.parametrize(
    ("spelling", "body"),
    [
        ("fraction digits", event(time="2026-11-28T15:12:02.000000Z")),
        ("offset +00:00", event(time="2026-11-28T15:12:02+00:00")),
        ("lower-case z", event(time="2026-11-28t15:12:02z")),
        ("another offset", event(time="2026-11-28T22:42:02+07:30")),
        ("beyond microseconds", event(time="2026-11-28T15:12:02.0000004Z")),
        ("short repository", event(data=data(repository="istio/pilot"))),
        ("registry alias", event(data=data(repository="index.docker.io/istio/pilot"))),
        ("digest prefix", event(data=data(artifact="sha256:" + HEX))),
        ("member order", event(data=dict(reversed(list(data().items()))))),
        ("null actor is no actor", event(data=data(actor=None))),
        ("subject naming the tag", event(subject="docker.io/istio/pilot:1.3.0")),
        ("short subject", event(subject="istio/pilot:1.3.0")),
        ("extension", event(partitionkey="x")),
    ],
)
def test_the_same_event_spelled_otherwise_has_the_same_fingerprint(
    spelling: str, body: dict[str, Any]
) -> None:
    assert _print(body) == _print(event()), spelling


def test_sub_second_spellings_of_one_instant_have_one_fingerprint() -> None:
    spellings = [
        "2026-11-28T10:00:02.5Z",
        "2026-11-28T10:00:02.500000Z",
        "2026-11-28T10:00:02.500Z",
        "2026-11-28T17:30:02.5+07:30",
        "2026-11-28T05:00:02.5-05:00",
    ]
    assert len({_print(event(time=t)) for t in spellings}) == 1


def test_white_space_does_not_count() -> None:
    spaced = record(json.dumps(event(), indent=4, separators=(" ,", " : ")).encode())
    compact = decode(record(json.dumps(event(), separators=(",", ":")).encode()), LIMIT)
    found = decode(spaced, LIMIT)
    assert isinstance(found, TagMoved) and isinstance(compact, TagMoved)
    assert found.fingerprint == compact.fingerprint


@pytest.mark.parametrize(
    ("change", "body"),
    [
        ("another instant", event(time="2026-11-28T15:12:02.000001Z")),
        ("another id", event(id="evt-2")),
        ("another source", event(source="urn:other")),
        ("another tag", event(data=data(tag="1.3.1"))),
        ("another artifact", event(data=data(artifact="sha256:" + "0" * 64))),
        ("an actor", event(data=data(actor="alice"))),
        ("a precondition", event(data=data(expected_version=0))),
    ],
)
def test_other_content_has_another_fingerprint(change: str, body: dict[str, Any]) -> None:
    assert _print(body) != _print(event()), change


def test_invalid_data_is_compared_as_json_values() -> None:
    """422s are recorded too: their data is compared canonically, numbers keep their
    JSON type (1.0 is not an integer, so it is another, equally invalid, event)."""
    bad = data(tag="-bad", expected_version=1)
    reordered = dict(reversed(list(bad.items())))
    assert _print(event(data=bad)) == _print(
        event(data=reordered, time="2026-11-28T15:12:02+00:00")
    )
    assert _print(event(data=bad)) != _print(event(data=data(tag="-bad", expected_version=1.0)))
    assert _print(event(data=bad)) != _print(event(data=data(tag="-worse", expected_version=1)))


@st.composite
def respelled(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid event and the same event as another client might write it."""
    from tests.helpers.strategies import offsets, rfc3339

    body = draw(cloud_events())
    original = parse_rfc3339(body["time"])
    d = dict(body["data"])
    if draw(st.booleans()):
        d["repository"] = normalize_repository(d["repository"])
    if draw(st.booleans()):
        d["artifact"] = normalize_digest(d["artifact"])
    members = draw(st.permutations(list(d.items())))
    other = {k: v for k, v in body.items() if k not in {"data", "subject", "myextension"}}
    other["time"] = rfc3339(original, draw(offsets))
    other["data"] = dict(members)
    if draw(st.booleans()):
        other["subject"] = f"{normalize_repository(d['repository'])}:{d['tag']}"
    return body, dict(draw(st.permutations(list(other.items()))))


@given(respelled(), st.booleans())
def test_any_respelling_of_an_event_is_the_same_event(
    pair: tuple[dict[str, Any], dict[str, Any]], as_binary: bool
) -> None:
    first, again = pair
    assert _print(again, binary if as_binary else structured) == _print(first)


# ---- problems that say what is actually wrong


@pytest.mark.parametrize(("value", "says"), [(None, "null (a Kafka tombstone)"), (b"", "empty")])
def test_a_tombstone_or_empty_value_is_said_to_be_no_cloudevent(
    value: bytes | None, says: str
) -> None:
    for headers in (STRUCTURED, ()):
        decoded = decode(record(value, headers), LIMIT)
        assert isinstance(decoded, Undecodable)
        assert says in decoded.problem.detail and "not a CloudEvent" in decoded.problem.detail
        assert "JSON:" not in decoded.problem.detail
        assert [i.location for i in decoded.problem.errors] == ["body"]


def test_binary_mode_with_no_value_lacks_data() -> None:
    headers = binary(event()).headers
    decoded = decode(record(None, headers), LIMIT)
    assert isinstance(decoded, Invalid)
    (problem,) = decoded.problem.errors
    assert problem.location == "body" and "empty" in problem.message


def test_data_base64_is_named_as_not_accepted() -> None:
    body = event(data=_DROP, data_base64="eyJ0YWciOiAieCJ9")
    decoded = decode(structured(body), LIMIT)
    assert isinstance(decoded, Invalid)
    assert [(i.location, i.value) for i in decoded.problem.errors] == [
        ("body.data_base64", "eyJ0YWciOiAieCJ9")
    ]
    assert "must be JSON" in decoded.problem.detail and "is required" not in decoded.problem.detail
    # beside data: still named, data is checked too, and the tag it names is kept
    both = decode(structured(event(data_base64="eA==", data=data(artifact="x"))), LIMIT)
    assert isinstance(both, Invalid)
    assert [i.location for i in both.problem.errors] == ["body.data_base64", "body.data.artifact"]
    assert both.subject == "docker.io/istio/pilot:1.3.0"
    # and the encoded data counts as content
    assert _print(event(data=_DROP, data_base64="eA==")) != _print(body)


@pytest.mark.parametrize(
    ("name", "rec", "subject"),
    [
        (
            "422, data names it",
            structured(event(data=data(artifact="x"))),
            "docker.io/istio/pilot:1.3.0",
        ),
        (
            "422, only the subject names it",
            structured(event(subject="istio/pilot:2", data=data(tag="-bad"))),
            "docker.io/istio/pilot:2",
        ),
        ("422, nothing names it", structured(event(data=data(tag="-bad"))), None),
        (
            "400 unknown type, data names it",
            structured(event(type="x.y")),
            "docker.io/istio/pilot:1.3.0",
        ),
        (
            "400 bad envelope, subject names it",
            structured(event(time="noon", subject="nginx:1", data=_DROP)),
            "docker.io/library/nginx:1",
        ),
        (
            "400 bad envelope, invalid subject",
            structured(event(time="noon", subject="x@y", data=_DROP)),
            None,
        ),
        (
            "400 binary body not JSON, ce_subject names it",
            record(b"{", (*binary(event(subject="nginx:1")).headers,)),
            "docker.io/library/nginx:1",
        ),
        ("400 not JSON at all", record(b"{"), None),
    ],
)
def test_rejections_keep_the_tag_the_input_names(
    name: str, rec: RawRecord, subject: str | None
) -> None:
    decoded = decode(rec, LIMIT)
    assert isinstance(decoded, Invalid | Undecodable), name
    assert decoded.subject == subject, name


@given(st.datetimes(timezones=st.just(UTC)), st.integers() | st.none())
def test_a_fingerprint_is_the_sha256_of_the_canonical_json_with_the_instant_in_iso_format(
    moment: datetime, number: int | None
) -> None:
    """The bytes stored fingerprints were made of: the instant as ``isoformat()`` writes
    it (orjson writes the datetime itself, in C), and integers beyond 64 bits through
    the standard encoder."""
    attributes = EventAttributes.model_validate(
        {
            "specversion": "1.0",
            "id": "e-1",
            "source": "https://registry.example/webhook",
            "type": "dev.ocitag.tag.moved",
            "time": "2026-11-28T15:12:02Z",
        }
    )
    data = {"n": number, "tag": "v1"}
    content = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "https://registry.example/webhook",
        "type": "dev.ocitag.tag.moved",
        "time": moment.isoformat(),
        "subject": "s",
        "data": data,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(canonical.encode()).digest()
    assert fingerprint(attributes, moment, "s", data) == expected
