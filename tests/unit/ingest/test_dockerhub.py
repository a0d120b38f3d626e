"""Docker Hub mapper on fixtures from Docker's webhook documentation."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from tests.helpers.ingest_fixtures import events, fixture, summary
from worker.ingest import dockerhub
from worker.ingest.mapping import MappingError, body_event_id


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "push.json",
            [("moved", "docker.io/svendowideit/testhook", "latest", None, "trustedbuilder")],
        ),
        ("push_semver.json", [("moved", "docker.io/acme/api-server", "v2.4.1", None, "acme-ci")]),
        ("push_untagged.json", [("ignored", "untagged")]),
    ],
)
def test_fixture_maps_to(name: str, expected: list[tuple[object, ...]]) -> None:
    assert summary(dockerhub.map_delivery(fixture("dockerhub", name), {})) == expected


def test_identity_is_derived_from_the_body_and_pushed_at() -> None:
    body = fixture("dockerhub", "push.json")
    [event] = events(dockerhub.map_delivery(body, {}))
    assert event.event_id == body_event_id(body, 0)
    assert event.time == datetime(2014, 12, 3, 0, 22, 41, tzinfo=UTC)
    assert event.source == "urn:ocitag:ingest:dockerhub:docker.io"
    # a different delivery (another push of the same tag) gets another id
    other = body.replace(b"1417566161", b"1417566162")
    assert events(dockerhub.map_delivery(other, {}))[0].event_id != event.event_id


def test_official_image_names_are_normalised() -> None:
    payload = orjson.loads(fixture("dockerhub", "push.json"))
    payload["repository"]["repo_name"] = "nginx"
    [event] = events(dockerhub.map_delivery(orjson.dumps(payload), {}))
    assert event.repository == "docker.io/library/nginx"


def _edit(path: list[str], value: object) -> bytes:
    payload = orjson.loads(fixture("dockerhub", "push.json"))
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return orjson.dumps(payload)


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (b"\xff\xfe", "body"),
        (b'"push"', "body"),
        (b'{"repository": {}}', "body.push_data"),
        (_edit(["push_data"], []), "body.push_data"),
        (_edit(["push_data", "pushed_at"], "now"), "body.push_data.pushed_at"),
        (_edit(["push_data", "pushed_at"], 2**62), "body.push_data.pushed_at"),
        (_edit(["push_data", "tag"], "a" * 129), "body.push_data.tag"),
        (_edit(["repository", "repo_name"], None), "body.repository.repo_name"),
        (_edit(["repository", "repo_name"], "Acme/API"), "body.repository.repo_name"),
        (_edit(["repository"], "acme/api"), "body.repository"),
    ],
)
def test_malformed_body_names_the_location(body: bytes, location: str) -> None:
    with pytest.raises(MappingError) as caught:
        dockerhub.map_delivery(body, {})
    assert caught.value.location == location
