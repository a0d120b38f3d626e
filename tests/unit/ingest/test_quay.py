"""Quay mapper on the example payloads of Quay's notification guide."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from tests.helpers.ingest_fixtures import events, fixture, summary
from worker.ingest import quay
from worker.ingest.mapping import MappingError, body_event_id

RECEIVED = {"x-ocitag-received-at": "2025-01-21T08:03:21.250Z"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("repo_push.json", [("moved", "quay.io/mynamespace/repository", "latest", None, None)]),
        (
            "repo_push_several_tags.json",
            [
                ("moved", "quay.example.com:8443/acme/api", "v2.4.1", None, None),
                ("moved", "quay.example.com:8443/acme/api", "v2.4", None, None),
                ("moved", "quay.example.com:8443/acme/api", "latest", None, None),
            ],
        ),
        ("build_success.json", [("ignored", "build")]),
        ("vulnerability_found.json", [("ignored", "scan")]),
    ],
)
def test_fixture_maps_to(name: str, expected: list[tuple[object, ...]]) -> None:
    assert summary(quay.map_delivery(fixture("quay", name), RECEIVED)) == expected


def test_every_updated_tag_gets_its_own_id_from_the_body_and_the_arrival_time() -> None:
    body = fixture("quay", "repo_push_several_tags.json")
    mapped = events(quay.map_delivery(body, RECEIVED))
    assert [e.event_id for e in mapped] == [body_event_id(body, i) for i in range(3)]
    assert {e.time for e in mapped} == {datetime(2025, 1, 21, 8, 3, 21, 250000, tzinfo=UTC)}
    assert {e.source for e in mapped} == {"urn:ocitag:ingest:quay:quay.example.com:8443"}


def _edit(key: str, value: object) -> bytes:
    payload = orjson.loads(fixture("quay", "repo_push.json"))
    payload[key] = value
    return orjson.dumps(payload)


@pytest.mark.parametrize(
    ("body", "headers", "location"),
    [
        (b"<xml/>", RECEIVED, "body"),
        (b"[]", RECEIVED, "body"),
        (fixture("quay", "repo_push.json"), {}, "headers.x-ocitag-received-at"),
        (
            fixture("quay", "repo_push.json"),
            {"x-ocitag-received-at": "yesterday"},
            "headers.x-ocitag-received-at",
        ),
        (_edit("updated_tags", "latest"), RECEIVED, "body.updated_tags"),
        (_edit("updated_tags", ["ok", 3]), RECEIVED, "body.updated_tags[1]"),
        (_edit("updated_tags", ["ok", "not ok"]), RECEIVED, "body.updated_tags[1]"),
        (_edit("docker_url", None), RECEIVED, "body.docker_url"),
        (_edit("docker_url", "quay.io/MyNamespace/Repo"), RECEIVED, "body.docker_url"),
    ],
)
def test_malformed_body_names_the_location(
    body: bytes, headers: dict[str, str], location: str
) -> None:
    with pytest.raises(MappingError) as caught:
        quay.map_delivery(body, headers)
    assert caught.value.location == location


def test_a_push_that_updated_no_tag_is_ignored() -> None:
    assert summary(quay.map_delivery(_edit("updated_tags", []), RECEIVED)) == [("ignored", "empty")]
