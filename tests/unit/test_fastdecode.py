"""The fast path (worker/fastdecode.py) only ever answers what the models answer: for
generated envelopes and data, good and bad, ``valid_event`` gives either None or exactly
the event the full path (``decode._envelope`` and ``decode._event``: the pydantic models)
makes — equal fields, fingerprint and content mode —, and it does answer every valid
event of the strategies, so the comparison is not vacuous. Its reading of the usual
``…Z`` time is ``parse_rfc3339``'s. Bad inputs come from any
member replaced by any JSON value or by a value at the edge of its rule (lengths one
over the limit, NUL, integers at the bounds, booleans for integers, digests in upper
case, odd content types and times), members added or removed, and every subject
spelling.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.strategies import cloud_events, offsets, rfc3339, times
from worker import decode
from worker.events import Decoded, TagDeleted, TagMoved, Undecodable
from worker.fastdecode import instant, valid_event
from worker.models import MAX_ACTOR_LENGTH, MAX_ID_LENGTH, MAX_SOURCE_LENGTH, MAX_VERSION
from worker.timefmt import parse_rfc3339

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
HEX = "ab" * 32
# values at the edge of each member's rule: some pass, some break it by one step
EDGES: dict[str, list[Any]] = {
    "specversion": ["1.0", "1.0 ", "1", 1.0, None],
    "id": ["x" * MAX_ID_LENGTH, "x" * (MAX_ID_LENGTH + 1), "", "a\x00b", "é", None, 7],
    "source": [
        "s" * MAX_SOURCE_LENGTH,
        "s" * (MAX_SOURCE_LENGTH + 1),
        "",
        "has space",
        "bare%zz",
        "%41b",
        "urn:x",
        "1abc:x",
    ],
    "type": ["ocitag.moved.v1", "ocitag.deleted.v1", "OCITAG.moved.v1", "other", None],
    "time": [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.Z",
        "2026-01-01T00:00:00.1234567Z",
        "2026-01-01T23:59:59.999999Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01t00:00:00.1234567z",
        "2026-01-01T00:00:00+23:59",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:60Z",
        "2026-02-30T00:00:00Z",
        "2026-01-01 00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "",
        None,
    ],
    "subject": ["", "not an id", "x\x00", None, 3],
    "datacontenttype": [
        "application/json",
        "Application/JSON; charset=utf-8",
        " application/json ;x",
        "application/json+x",
        "text/plain",
        "",
        None,
        1,
    ],
    "repository": ["nginx", "Docker.io/x", "index.docker.io/a/b", "a/B", "a:1", "a@b", "", " a"],
    "tag": ["v" * 128, "v" * 129, ".x", "-x", "_x", "sha256:" + HEX, "", "a b"],
    "artifact": [HEX, "sha256:" + HEX, "sha512:" + HEX * 2, HEX.upper(), "md5:" + HEX, HEX[1:]],
    "actor": ["a" * MAX_ACTOR_LENGTH, "a" * (MAX_ACTOR_LENGTH + 1), "", "a\x00", None, 1],
    "previous_artifact": [HEX, "sha256:" + HEX.upper(), "", None, 0],
    "expected_version": [0, -1, MAX_VERSION, MAX_VERSION + 1, True, False, 1.0, "1", None],
}
ATTRIBUTES = ["specversion", "id", "source", "type", "time", "subject", "datacontenttype"]
MEMBERS = ["repository", "tag", "artifact", "actor", "previous_artifact", "expected_version"]


def _full(attributes: dict[str, Any], data: Any, binary: bool) -> Decoded:
    """What the models decide (the path the fast one stands in for)."""
    prefix, data_prefix = ("headers.ce_", "body") if binary else ("body.", "body.data")
    try:
        envelope, moment = decode._envelope(attributes, prefix)
    except decode._NotDecodableError as exc:
        return Undecodable(exc.problem, exc.source, exc.event_id)
    return decode._event(envelope, moment, attributes, data, data_prefix)


def _check(attributes: dict[str, Any], data: Any, binary: bool) -> TagMoved | TagDeleted | None:
    fast = valid_event(copy.deepcopy(attributes), copy.deepcopy(data), binary)
    full = _full(attributes, data, binary)
    if fast is not None:
        assert isinstance(full, TagMoved | TagDeleted)
        assert fast == full
        assert fast.binary == full.binary == binary
        assert type(fast) is type(full)
    return fast


def _split(event: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    attributes = dict(event)
    return attributes, attributes.pop("data", None)


def _subject(event: dict[str, Any], how: str) -> None:
    data = event["data"]
    repository, tag = data["repository"], data["tag"]
    spelled = {
        "same": f"{repository}:{tag}",
        "short": f"{repository.removeprefix('docker.io/library/')}:{tag}",
        "other": f"{repository}:{tag}x",
        "case": f"{repository.upper()}:{tag.swapcase()}",
        "junk": "not an id",
    }
    if how == "absent":
        event.pop("subject", None)
    else:
        event["subject"] = spelled[how]


subjects = st.sampled_from(["same", "short", "other", "case", "junk", "absent"])
EDGE_CASES = [(name, value) for name, values in EDGES.items() for value in values]
BASE_EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "https://registry.example.com/webhook",
    "type": "ocitag.moved.v1",
    "time": "2026-11-28T15:12:02.5+01:00",
    "subject": "ghcr.io/acme/app:1.3.0",
    "data": {
        "repository": "ghcr.io/acme/app",
        "tag": "1.3.0",
        "artifact": "sha256:" + HEX,
        "actor": "alice",
        "previous_artifact": HEX,
        "expected_version": 2,
    },
}


@pytest.mark.parametrize(("binary", "subject"), [(False, True), (True, False)])
@pytest.mark.parametrize(("name", "value"), EDGE_CASES)
def test_each_edge_of_each_rule_decides_as_the_models(
    name: str, value: Any, binary: bool, subject: bool
) -> None:
    event = copy.deepcopy(BASE_EVENT)
    if not subject:  # else a subject naming the tag refuses any other tag on its own
        event.pop("subject")
    if name == "type" and value == "ocitag.deleted.v1":
        event["data"].pop("artifact")
    (event if name in ATTRIBUTES else event["data"])[name] = value
    attributes, data = _split(event)
    fast = _check(attributes, data, binary)
    # the edge decides the answer: the models take it (fast answers too) or refuse it
    assert (fast is None) == (
        not isinstance(_full(attributes, data, binary), TagMoved | TagDeleted)
    )


@given(cloud_events(), subjects, st.booleans(), st.booleans(), st.booleans())
def test_valid_events_take_the_fast_path_and_match(
    event: dict[str, Any], subject: str, deletion: bool, binary: bool, optional: bool
) -> None:
    if subject in ("same", "absent", "short"):
        _subject(event, subject)
    if deletion:
        event["type"] = "ocitag.deleted.v1"
        event["data"].pop("artifact")
    if optional:
        event["data"].update(previous_artifact="sha256:" + HEX, expected_version=3)
        event["datacontenttype"] = "application/json"
    attributes, data = _split(event)
    fast = _check(attributes, data, binary)
    assert fast is not None  # every valid event is answered here, not by the models
    assert isinstance(fast, TagDeleted if deletion else TagMoved)


@given(
    cloud_events(),
    st.sampled_from(ATTRIBUTES + MEMBERS),
    st.data(),
    subjects,
    st.booleans(),
)
def test_any_member_at_its_edge_or_replaced_decides_as_the_models(
    event: dict[str, Any], name: str, draw: st.DataObject, subject: str, binary: bool
) -> None:
    _subject(event, subject)
    value = draw.draw(st.sampled_from(EDGES[name]) | json_values)
    if name in ATTRIBUTES:
        event[name] = value
    else:
        event["data"][name] = value
    attributes, data = _split(event)
    _check(attributes, data, binary)


@given(
    cloud_events(),
    st.sampled_from(ATTRIBUTES + MEMBERS + ["data"]),
    st.dictionaries(st.text(max_size=12), json_values, max_size=3),
    st.dictionaries(st.text(max_size=12), json_values, max_size=2),
    st.booleans(),
)
def test_members_removed_or_added_decide_as_the_models(
    event: dict[str, Any],
    removed: str,
    extensions: dict[str, Any],
    extra_data: dict[str, Any],
    binary: bool,
) -> None:
    if removed in MEMBERS:
        event["data"].pop(removed, None)
    else:
        event.pop(removed, None)
    event.update({k: v for k, v in extensions.items() if k != "data"})
    if isinstance(event.get("data"), dict):
        event["data"].update(extra_data)
    attributes, data = _split(event)
    _check(attributes, data, binary)


@given(cloud_events(), json_values, st.booleans())
def test_data_of_any_shape_decides_as_the_models(
    event: dict[str, Any], data: Any, binary: bool
) -> None:
    attributes, _ = _split(event)
    _check(attributes, data, binary)


def _parsed(text: str) -> datetime | None:
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


zulu_like = st.builds(
    "{}-{}-{}T{}:{}:{}{}{}".format,
    st.sampled_from(["0000", "0001", "2026", "9999", "10000"]),
    st.sampled_from(["00", "01", "02", "12", "13"]),
    st.sampled_from(["00", "01", "28", "29", "31", "32"]),
    st.sampled_from(["00", "23", "24"]),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["00", "59", "60", "61"]),
    st.sampled_from(["", "."]) | st.text("0123456789", min_size=1, max_size=9).map(".{}".format),
    st.sampled_from(["Z", "Z", "z", "+00:00", "-01:30", ""]),
)


@given(st.one_of(zulu_like, st.builds(rfc3339, times, offsets), st.text(max_size=40)))
def test_the_usual_time_reads_as_parse_rfc3339_reads_it(text: str) -> None:
    fast, full = instant(text), _parsed(text)
    assert fast == full
    if fast is not None and full is not None:
        assert fast.tzinfo is full.tzinfo is UTC
