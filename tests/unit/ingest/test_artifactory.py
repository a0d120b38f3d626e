"""Artifactory mapper on fixtures from JFrog's docker-domain webhook documentation."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from tests.helpers.ingest_fixtures import events, fixture, summary
from worker.ingest import artifactory
from worker.ingest.mapping import MappingError, body_event_id

RECEIVED = {"x-ocitag-received-at": "2025-01-21T08:03:21Z"}
LIST = "sha256:35c4a2c15539c6c1e4e5fa4e554dac323ad0107d8eb5c582d6ff386b383b7dce"
MANIFEST = "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
INTERNAL = "artifactory.internal.example.com:8082"


@pytest.mark.parametrize(
    ("name", "headers", "expected"),
    [
        (
            "pushed_list_manifest.json",
            RECEIVED,
            [("moved", "acme.jfrog.io/docker-remote-cache/library/ubuntu", "latest", LIST, None)],
        ),
        (
            "pushed_manifest.json",
            RECEIVED,
            [("moved", f"{INTERNAL}/docker-local/team/api", "1.8.0", MANIFEST, None)],
        ),
        (
            "pushed_manifest.json",
            {**RECEIVED, "x-ocitag-registry": "docker.acme.example"},
            [("moved", "docker.acme.example/docker-local/team/api", "1.8.0", MANIFEST, None)],
        ),
        (
            "deleted.json",
            RECEIVED,
            [("deleted", "acme.jfrog.io/docker-local/team/api", "1.7.0", None, None)],
        ),
        # the documentation's placeholder checksum does not matter to a deletion
        (
            "deleted_doc_sample.json",
            RECEIVED,
            [("deleted", "acme.jfrog.io/sample_repo/sample_arch", "sample_image", None, None)],
        ),
        ("pushed_by_digest.json", RECEIVED, [("ignored", "untagged")]),
        ("promoted.json", RECEIVED, [("ignored", "other_action")]),
        ("artifact_deployed.json", RECEIVED, [("ignored", "other_event")]),
    ],
)
def test_fixture_maps_to(
    name: str, headers: dict[str, str], expected: list[tuple[object, ...]]
) -> None:
    assert summary(artifactory.map_delivery(fixture("artifactory", name), headers)) == expected


def test_identity_is_derived_from_the_body_and_the_arrival_time() -> None:
    body = fixture("artifactory", "pushed_manifest.json")
    [event] = events(artifactory.map_delivery(body, RECEIVED))
    assert event.event_id == body_event_id(body, 0)
    assert event.time == datetime(2025, 1, 21, 8, 3, 21, tzinfo=UTC)
    assert event.source == f"urn:ocitag:ingest:artifactory:{INTERNAL}"


def _edit(path: list[str], value: object) -> bytes:
    payload = orjson.loads(fixture("artifactory", "pushed_manifest.json"))
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return orjson.dumps(payload)


@pytest.mark.parametrize(
    ("body", "headers", "location"),
    [
        (b"", RECEIVED, "body"),
        (b"{}", RECEIVED, "body.domain"),
        (b'{"domain": "docker"}', RECEIVED, "body.event_type"),
        (b'{"domain": "docker", "event_type": "pushed"}', RECEIVED, "body.data"),
        (fixture("artifactory", "pushed_manifest.json"), {}, "headers.x-ocitag-received-at"),
        (_edit(["data", "sha256"], "sample_checksum"), RECEIVED, "body.data.sha256"),
        (_edit(["data", "sha256"], None), RECEIVED, "body.data.sha256"),
        (_edit(["data", "repo_key"], None), RECEIVED, "body.data.repo_key"),
        (_edit(["data", "tag"], "1.8.0+build"), RECEIVED, "body.data.tag"),
        (_edit(["jpd_origin"], None), RECEIVED, "body.jpd_origin"),
        (_edit(["jpd_origin"], "https://:99999"), RECEIVED, "body.jpd_origin"),
        (_edit(["data"], "x"), RECEIVED, "body.data"),
    ],
)
def test_malformed_body_names_the_location(
    body: bytes, headers: dict[str, str], location: str
) -> None:
    with pytest.raises(MappingError) as caught:
        artifactory.map_delivery(body, headers)
    assert caught.value.location == location
