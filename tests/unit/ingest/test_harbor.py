"""Harbor mapper on fixtures built from Harbor's source (see the fixtures' README)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from tests.helpers.ingest_fixtures import events, fixture, summary
from worker.ingest import harbor
from worker.ingest.mapping import MappingError, body_event_id

D1 = "sha256:76525f02955aec223342400a080c73024c995c9db1ba2eabf7505cf3bdf3f1f0"
D2 = "sha256:dde8e930c7b6a490f728e66292bc9bce42efc9bbb5278bae40e4f30f6e00fe8c"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "default_push.json",
            [("moved", "harbor.example.com/library/busybox", "v1.2.0", D1, "admin")],
        ),
        (
            "default_delete.json",
            [("deleted", "harbor.example.com:8443/team-a/web/api", "v1.2.0", None, "alice")],
        ),
        ("default_push_by_digest.json", [("ignored", "untagged")]),
        ("default_delete_untagged.json", [("ignored", "digest_delete")]),
        ("default_pull.json", [("ignored", "pull")]),
        ("default_scan_completed.json", [("ignored", "scan")]),
        ("cloudevents_push.json", [("moved", "harbor.dev/library/busybox", "1.36", D2, "admin")]),
        (
            "cloudevents_delete.json",
            [("deleted", "harbor.dev/library/busybox", "1.36", None, "admin")],
        ),
        ("cloudevents_pull.json", [("ignored", "pull")]),
    ],
)
def test_fixture_maps_to(name: str, expected: list[tuple[object, ...]]) -> None:
    assert summary(harbor.map_delivery(fixture("harbor", name), {})) == expected


def test_default_format_identity_is_derived_from_the_body_and_occur_at() -> None:
    body = fixture("harbor", "default_push.json")
    [event] = events(harbor.map_delivery(body, {}))
    assert event.event_id == body_event_id(body, 0)
    assert event.time == datetime(2025, 1, 21, 8, 3, 21, tzinfo=UTC)
    assert event.source == "urn:ocitag:ingest:harbor:harbor.example.com"
    assert harbor.map_delivery(body, {}) == harbor.map_delivery(body, {})


def test_cloudevents_format_keeps_the_event_id_and_time() -> None:
    [event] = events(harbor.map_delivery(fixture("harbor", "cloudevents_push.json"), {}))
    assert event.event_id == "4b2f89a6-548d-4c12-9993-a1f5790b97d2"
    assert event.time == datetime(2023, 3, 6, 6, 8, 43, tzinfo=UTC)
    assert event.source == "urn:ocitag:ingest:harbor:harbor.dev"


def test_every_resource_of_a_payload_is_mapped_with_its_own_id() -> None:
    payload = orjson.loads(fixture("harbor", "cloudevents_push.json"))
    first = payload["data"]["resources"][0]
    payload["data"]["resources"] = [
        first,
        {**first, "tag": "latest", "resource_url": "harbor.dev/library/busybox:latest"},
        {**first, "tag": first["digest"]},
    ]
    mapped = harbor.map_delivery(orjson.dumps(payload), {})
    assert summary(mapped) == [
        ("moved", "harbor.dev/library/busybox", "1.36", D2, "admin"),
        ("moved", "harbor.dev/library/busybox", "latest", D2, "admin"),
        ("ignored", "untagged"),
    ]
    assert [e.event_id for e in events(mapped)] == [
        "4b2f89a6-548d-4c12-9993-a1f5790b97d2#0",
        "4b2f89a6-548d-4c12-9993-a1f5790b97d2#1",
    ]


def _edit(name: str, path: list[str | int], value: object) -> bytes:
    payload = orjson.loads(fixture("harbor", name))
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return orjson.dumps(payload)


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (b"", "body"),
        (b"[1, 2]", "body"),
        (b'{"occur_at": 1}', "body.type"),
        (fixture("harbor", "default_push_bad_digest.json"), "body.event_data.resources[0].digest"),
        (_edit("default_push.json", ["occur_at"], "yesterday"), "body.occur_at"),
        (_edit("default_push.json", ["event_data"], None), "body.event_data"),
        (
            _edit("default_push.json", ["event_data", "resources", 0, "resource_url"], None),
            "body.event_data.resources[0].resource_url",
        ),
        (
            _edit("default_push.json", ["event_data", "resources", 0, "digest"], None),
            "body.event_data.resources[0].digest",
        ),
        (
            _edit(
                "default_push.json",
                ["event_data", "repository", "repo_full_name"],
                "Library/BusyBox",
            ),
            "body.event_data.repository.repo_full_name",
        ),
        (
            _edit("default_push.json", ["event_data", "resources", 0, "tag"], "-bad"),
            "body.event_data.resources[0].tag",
        ),
        (_edit("cloudevents_push.json", ["time"], "2023-03-06 06:08:43"), "body.time"),
        (_edit("cloudevents_push.json", ["id"], ""), "body.id"),
        (_edit("cloudevents_push.json", ["data", "resources"], {}), "body.data.resources"),
    ],
)
def test_malformed_body_names_the_location(body: bytes, location: str) -> None:
    with pytest.raises(MappingError) as caught:
        harbor.map_delivery(body, {})
    assert caught.value.location == location


def test_broken_entries_that_are_ignored_anyway_are_not_errors() -> None:
    body = _edit("default_pull.json", ["event_data"], "not an object")
    assert summary(harbor.map_delivery(body, {})) == [("ignored", "pull")]
    by_digest = _edit(
        "default_push_by_digest.json", ["event_data", "resources", 0, "resource_url"], 7
    )
    assert summary(harbor.map_delivery(by_digest, {})) == [("ignored", "untagged")]
