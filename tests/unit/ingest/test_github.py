"""GitHub mapper on fixtures shaped as octokit/webhooks' examples (see the README)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from tests.helpers.ingest_fixtures import events, fixture, summary
from worker.ingest import github
from worker.ingest.mapping import MappingError

INDEX = "sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6"
SINGLE = "sha256:18ac3e7343f016890c510e93f935261169d9e3f565436429830faf0934f4f8e4"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def headers(event: str) -> dict[str, str]:
    return {"x-github-event": event, "x-github-delivery": DELIVERY}


@pytest.mark.parametrize(
    ("name", "event", "expected"),
    [
        (
            "registry_package_published_index.json",
            "registry_package",
            [("moved", "ghcr.io/octo-org/hello-world", "v1.4.0", INDEX, "monalisa")],
        ),
        ("registry_package_published_platform.json", "registry_package", [("ignored", "untagged")]),
        (
            "package_published.json",
            "package",
            [("moved", "ghcr.io/octo-org/hello-world", "v1.4.0", INDEX, "monalisa")],
        ),
        (
            "package_updated.json",
            "package",
            [("moved", "ghcr.io/octo-org/hello-world", "latest", SINGLE, "monalisa")],
        ),
        ("package_published_npm.json", "package", [("ignored", "not_container")]),
        ("ping.json", "ping", [("ignored", "ping")]),
        ("package_published.json", "push", [("ignored", "other_event")]),
    ],
)
def test_fixture_maps_to(name: str, event: str, expected: list[tuple[object, ...]]) -> None:
    assert summary(github.map_delivery(fixture("github", name), headers(event))) == expected


def test_a_multi_arch_push_publishes_the_index_tag_once() -> None:
    deliveries = [
        ("registry_package_published_platform.json", "a"),
        ("registry_package_published_platform.json", "b"),
        ("registry_package_published_index.json", "c"),
    ]
    published = [
        event
        for name, delivery in deliveries
        for event in events(
            github.map_delivery(
                fixture("github", name),
                {"x-github-event": "registry_package", "x-github-delivery": delivery},
            )
        )
    ]
    assert [(e.tag, e.digest, e.event_id) for e in published] == [("v1.4.0", INDEX, "c")]


def test_identity_is_the_delivery_guid_and_the_first_real_timestamp() -> None:
    [zero_times] = events(
        github.map_delivery(fixture("github", "package_published.json"), headers("package"))
    )
    assert zero_times.event_id == DELIVERY
    assert zero_times.time == datetime(2025, 1, 21, 8, 3, 21, tzinfo=UTC)  # package.updated_at
    assert zero_times.source == "urn:ocitag:ingest:github:ghcr.io"
    [versioned] = events(
        github.map_delivery(fixture("github", "package_updated.json"), headers("package"))
    )
    assert versioned.time == datetime(2025, 2, 1, 12, 0, tzinfo=UTC)


def test_event_name_is_inferred_from_the_body_without_the_header() -> None:
    body = fixture("github", "package_published.json")
    mapped = github.map_delivery(body, {"x-github-delivery": DELIVERY})
    assert summary(mapped)[0][0] == "moved"


def test_owner_case_is_folded_and_missing_package_url_falls_back_to_owner_and_name() -> None:
    payload = orjson.loads(fixture("github", "package_published.json"))
    payload["package"]["package_version"]["package_url"] = "ghcr.io/Octo-Org/Hello-World:v1.4.0"
    [event] = events(github.map_delivery(orjson.dumps(payload), headers("package")))
    assert event.repository == "ghcr.io/octo-org/hello-world"
    del payload["package"]["package_version"]["package_url"]
    [event] = events(github.map_delivery(orjson.dumps(payload), headers("package")))
    assert event.repository == "ghcr.io/octo-org/hello-world"


def _edit(name: str, path: list[str], value: object) -> bytes:
    payload = orjson.loads(fixture("github", name))
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return orjson.dumps(payload)


VERSION = ["package", "package_version"]
TAG = [*VERSION, "container_metadata", "tag"]


@pytest.mark.parametrize(
    ("body", "hdrs", "location"),
    [
        (b"not json", headers("package"), "body"),
        (b"{}", headers("package"), "body.package"),
        (
            fixture("github", "package_published.json"),
            {"x-github-event": "package"},
            "headers.x-github-delivery",
        ),
        (_edit("package_published.json", ["package"], []), headers("package"), "body.package"),
        (
            _edit(
                "package_published.json",
                [*TAG, "digest"],
                "sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b",
            ),
            headers("package"),
            "body.package.package_version.container_metadata.tag.digest",
        ),
        (
            _edit("package_published.json", [*TAG, "digest"], None),
            headers("package"),
            "body.package.package_version.container_metadata.tag.digest",
        ),
        (
            _edit("package_published.json", [*TAG, "name"], "v1 beta"),
            headers("package"),
            "body.package.package_version.container_metadata.tag.name",
        ),
        (
            _edit("package_published.json", [*VERSION, "container_metadata"], "x"),
            headers("package"),
            "body.package.package_version.container_metadata",
        ),
        (
            _edit("package_published.json", [*VERSION, "package_url"], "ghcr.io/org/app name:v1"),
            headers("package"),
            "body.package.package_version.package_url",
        ),
        (
            _edit("package_published.json", ["package", "updated_at"], "Tuesday"),
            headers("package"),
            "body.package.updated_at",
        ),
        (
            _edit("package_published.json", ["package", "updated_at"], None),
            headers("package"),
            "body.package.updated_at",
        ),
    ],
)
def test_malformed_body_names_the_location(
    body: bytes, hdrs: dict[str, str], location: str
) -> None:
    with pytest.raises(MappingError) as caught:
        github.map_delivery(body, hdrs)
    assert caught.value.location == location
