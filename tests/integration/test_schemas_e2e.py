"""The published contract holds for what the real worker publishes: every outcome of
every status validates against schemas/outcome-*.schema.json, its data against the
seed's OCITag / ErrorModel (from the vendored OpenAPI document), its headers and the dead
letters' headers against schemas/asyncapi.yaml, and the CloudEvents SDK reads it (the
harness checks both for every outcome it collects); the input events validate against
schemas/tag-moved-event.schema.json or tag-deleted-event.schema.json (and the schemas are
never stricter than the worker)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers.cloudevents_sdk import sdk_errors
from tests.helpers.contract import (
    asyncapi_validator,
    errors_of,
    schema_validator,
    seed_validator,
)
from tests.helpers.harness import Received, Record, binary, running_worker, structured
from worker.settings import Settings

pytestmark = pytest.mark.integration

HEX = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
HEX2 = hashlib.sha256(b"2").hexdigest()
SOURCE = "https://registry.example.com/webhook"


def event(event_id: str, time: str, **data: Any) -> dict[str, Any]:
    body = {"repository": "docker.io/istio/pilot", "tag": "1.3.0", "artifact": HEX, **data}
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": "ocitag.moved.v1",
        "time": time,
        "data": body,
    }


#: (name, record, the event it carries or None, expected status, change or problem slug)
CASES: list[tuple[str, Record, dict[str, Any] | None, int, str]] = []
TAG = "docker.io/istio/pilot:1.3.0"
#: the subject (and key) of each case's outcome when it is not TAG
SUBJECTS: dict[str, str | None] = {}


def _case(
    name: str,
    record: Record,
    sent: dict[str, Any] | None,
    status: int,
    what: str,
    subject: str | None = TAG,
) -> None:
    CASES.append((name, record, sent, status, what))
    SUBJECTS[name] = subject


def _structured(name: str, ev: dict[str, Any], status: int, what: str) -> None:
    _case(name, structured(ev, key=b"docker.io/istio/pilot:1.3.0"), ev, status, what)


created = event("created", "2026-11-28T15:00:00Z", actor="alice")
_structured("created", created, 200, "created")
updated = event("updated", "2026-11-28T15:00:01Z", artifact="sha256:" + HEX2)
_case("updated", binary(updated), updated, 200, "updated")
_structured(
    "unchanged", event("unchanged", "2026-11-28T15:00:02Z", artifact=HEX2), 200, "unchanged"
)
_structured("superseded", event("superseded", "2026-11-28T14:00:00Z"), 409, "superseded")
_structured("reused", event("updated", "2026-11-28T15:00:09Z"), 409, "id-reused")
_structured(
    "previous",
    event("previous", "2026-11-28T15:00:03Z", previous_artifact=HEX),
    412,
    "precondition-failed",
)
_structured(
    "version",
    event("version", "2026-11-28T15:00:04Z", expected_version=1),
    412,
    "precondition-failed",
)
_structured(
    "invalid",
    event("invalid", "2026-11-28T15:00:05Z", artifact="sha256:xyz", tag="-bad"),
    422,
    "invalid-data",
)
SUBJECTS["invalid"] = None  # neither data nor a subject names a valid tag
_structured(
    "invalid, subject kept",
    {**event("invalid-2", "2026-11-28T15:00:05Z", tag="-bad"), "subject": "nginx:1"},
    422,
    "invalid-data",
)
SUBJECTS["invalid, subject kept"] = "docker.io/library/nginx:1"
_structured(
    "invalid, data names the tag",
    event("invalid-3", "2026-11-28T15:00:05Z", artifact="sha256:xyz"),
    422,
    "invalid-data",
)
base64 = {k: v for k, v in event("base64", "2026-11-28T15:00:05Z").items() if k != "data"}
_structured("data_base64", {**base64, "data_base64": "e30="}, 422, "invalid-data")
SUBJECTS["data_base64"] = None
_case(
    "undecodable",
    (b"k", b"\xffnot json", [("content-type", b"application/cloudevents+json"), ("t", b"1")]),
    None,
    400,
    "undecodable",
    None,
)
_case("tombstone", (b"k", None, []), None, 400, "undecodable", None)
no_time = {k: v for k, v in event("no-time", "x").items() if k != "time"}
_structured("no-time", no_time, 400, "invalid-envelope")
bad_time = event("bad-time", "later")
_case("bad-time", binary(bad_time), bad_time, 400, "invalid-envelope")
_structured(
    "other-type", {**event("other", "2026-11-28T15:00:06Z"), "type": "x.y"}, 400, "unknown-type"
)
_structured(
    "preconditions-hold",
    event("ok", "2026-11-28T15:00:07Z", previous_artifact=HEX2, expected_version=3, actor="bob"),
    200,
    "updated",
)


def deletion(event_id: str, time: str, **data: Any) -> dict[str, Any]:
    body = {"repository": "docker.io/istio/pilot", "tag": "1.3.0", **data}
    return {**event(event_id, time), "type": "ocitag.deleted.v1", "data": body}


_structured("removed", deletion("removed", "2026-11-28T15:00:08Z", actor="eve"), 200, "deleted")
not_found = deletion("not-found", "2026-11-28T15:00:09Z")
_case("not-found", binary(not_found), not_found, 404, "not-found")
_structured(
    "deletion-with-artifact",
    deletion("with-artifact", "2026-11-28T15:00:10Z", artifact=HEX),
    422,
    "invalid-data",
)
_structured(
    "deletion-superseded", deletion("old-deletion", "2026-11-28T14:00:00Z"), 409, "superseded"
)


def _headers(record: Received) -> dict[str, str]:
    return {name: value.decode("utf-8") for name, value in record.headers}


def _outcome_kind(body: dict[str, Any]) -> str:
    if body["status"] == 200:
        change: str = body["change"]
        return change
    slug: str = body["data"]["type"].rsplit("/", 1)[-1]
    return slug


async def test_every_outcome_and_dead_letter_matches_the_published_schemas(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(topic_partitions=1)  # one partition: outcomes in input order
    async with running_worker(settings) as worker:
        await worker.publish([record for _, record, _, _, _ in CASES])
        outcomes = await worker.outcomes(len(CASES))
        dead = await worker.collect(settings.topics.dlq_topic, sum(c[3] == 400 for c in CASES))

    got = [(o.body["status"], _outcome_kind(o.body)) for o in outcomes]
    assert got == [(status, what) for _, _, _, status, what in CASES]
    assert {status for status, _ in got} == {200, 400, 404, 409, 412, 422}
    for (name, *_), outcome in zip(CASES, outcomes, strict=True):
        # the tag the input names, kept whatever the status; no attribute is ever null
        subject = SUBJECTS[name]
        assert (outcome.body.get("subject"), outcome.key) == (
            subject,
            subject.encode() if subject else None,
        ), name
        assert None not in outcome.body.values(), name
        # the harness had the SDK read every outcome; here it is plain to see
        assert sdk_errors(outcome.key, outcome.value, outcome.headers) == [], name
    tombstone = next(
        o for (name, *_), o in zip(CASES, outcomes, strict=True) if name == "tombstone"
    )
    assert "tombstone" in tombstone.body["data"]["detail"]

    success_checks = {
        "ocitag.updated.v1": schema_validator("outcome-updated.schema.json"),
        "ocitag.removed.v1": schema_validator("outcome-removed.schema.json"),
    }
    rejected_check = schema_validator("outcome-rejected.schema.json")
    headers_check = asyncapi_validator("/components/schemas/outcomeHeaders")
    key_check = asyncapi_validator("/components/schemas/ocitagId")
    for (name, *_), outcome in zip(CASES, outcomes, strict=True):
        body = outcome.body
        assert errors_of(headers_check, _headers(outcome)) == [], name
        if body["status"] == 200:
            assert errors_of(success_checks[body["type"]], body) == [], name
            assert errors_of(seed_validator("OCITag"), body["data"]) == [], name
            assert errors_of(schema_validator("ocitag.schema.json"), body["data"]) == [], name
            assert outcome.key is not None
            assert errors_of(key_check, outcome.key.decode()) == [], name
        else:
            assert errors_of(rejected_check, body) == [], name
            assert errors_of(seed_validator("ErrorModel"), body["data"]) == [], name
            assert errors_of(schema_validator("error-model.schema.json"), body["data"]) == [], name

    dead_check = asyncapi_validator("/components/messages/deadLetter/headers")
    for letter in dead:
        assert errors_of(dead_check, _headers(letter)) == []
        assert _headers(letter)["ocitag_dlq_topic"] == settings.topics.input_topic


def test_input_events_match_the_input_schemas() -> None:
    """The schemas describe what the worker takes: every event it decoded validates; the
    envelope rules JSON Schema can state reject what the worker rejected with a 400."""
    checks = {
        kind: (
            schema_validator(f"tag-{kind}-event.schema.json"),
            schema_validator(f"tag-{kind}-data.schema.json"),
            asyncapi_validator(f"/components/messages/tag{kind.title()}Binary/headers"),
            asyncapi_validator(f"/components/messages/tag{kind.title()}Structured/headers"),
        )
        for kind in ("moved", "deleted")
    }
    for name, (_, _, headers), sent, status, what in CASES:
        if sent is None:
            continue
        kind = "deleted" if sent.get("type") == "ocitag.deleted.v1" else "moved"
        event_check, data_check, binary_headers, structured_headers = checks[kind]
        header_map = {k: v.decode() for k, v in headers}
        if status == 422:
            # data rules: the schema states only some (digest and tag patterns), the
            # worker all of them; test_unit's schema tests cover the patterns
            continue
        if "ce_specversion" in header_map:
            assert errors_of(data_check, sent["data"]) == [], name
            if status != 400:
                assert errors_of(binary_headers, header_map) == [], name
        else:
            assert errors_of(structured_headers, header_map) == [], name
            problems = errors_of(event_check, sent)
            if status == 400 and what in {"unknown-type", "invalid-envelope"}:
                assert problems, f"{name}: the worker rejects it, the schema should too"
            else:
                assert problems == [], name


def test_the_schemas_reject_a_wrong_outcome() -> None:
    """So that the checks above can fail."""
    ocitag = {
        "artifact": HEX,
        "repository": "docker.io/istio/pilot",
        "tag": "1.3.0",
        "created_by": "alice",
        "created_on": "2026-11-28T15:00:00Z",
        "last_modified_by": "alice",
        "last_modified_on": "2026-11-28T15:00:00Z",
    }
    assert errors_of(seed_validator("OCITag"), {**ocitag, "version": 1})
    assert errors_of(schema_validator("ocitag.schema.json"), {**ocitag, "version": 1})
    outcome = {
        "specversion": "1.0",
        "id": "41e7ca47-59a7-5452-b489-0942465668bc",
        "source": "urn:ocitag-worker",
        "type": "ocitag.updated.v1",
        "time": "2026-11-28T15:00:00Z",
        "subject": "docker.io/istio/pilot:1.3.0",
        "datacontenttype": "application/json",
        "status": 200,
        "causationid": "created",
        "causationsource": SOURCE,
        "resourceversion": 1,
        "change": "created",
        "data": ocitag,
    }
    check = schema_validator("outcome-updated.schema.json")
    assert errors_of(check, outcome) == []
    assert errors_of(check, {**outcome, "status": 201})
    assert errors_of(check, {**outcome, "data": {**ocitag, "colour": "blue"}})
    assert errors_of(check, {**outcome, "id": "not-a-uuid"})
    assert errors_of(schema_validator("outcome-rejected.schema.json"), outcome)
