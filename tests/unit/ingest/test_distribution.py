"""The distribution mapper on deliveries captured from the real registry v3.1.2 (crane
pushing, tagging and deleting with htpasswd auth on) and GitLab's v1 envelope."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.helpers.ingest import load_delivery
from worker.ingest import distribution
from worker.ingest.mapping import Ignored, Mapped, MappingError, TagChange

HOST = "127.0.0.1:45285"
SOURCE = f"urn:ocitag:ingest:distribution:{HOST}"
DIGEST = "sha256:ac079e987c065475c4feb3688dc79540f7b332dce28ad2a922eedc750b130b01"


def moved(tag: str, event_id: str, time: datetime) -> TagChange:
    return TagChange("moved", f"{HOST}/team/app", tag, DIGEST, event_id, time, SOURCE, "alice")


V1 = moved(
    "v1", "01a234ba-1046-7463-b380-d954758af2ce", datetime(2026, 12, 2, 3, 8, 58, 822288, UTC)
)
V2 = moved(
    "v2", "01a234ba-1726-7ce9-a958-e11a1fba7231", datetime(2026, 12, 2, 3, 9, 0, 582847, UTC)
)

CASES: list[tuple[str, list[Mapped]]] = [
    ("push-tag", [V1]),
    ("push-blob", [Ignored("blob")]),
    ("pull", [Ignored("pull")]),
    ("push-untagged", [Ignored("untagged", DIGEST)]),
    (
        "delete-tag",
        [
            TagChange(
                "deleted",
                f"{HOST}/team/app",
                "v2",
                None,
                "01a234ba-1d7b-77f1-99dd-6998841a9987",
                datetime(2026, 12, 2, 3, 9, 2, 203521, UTC),
                SOURCE,
                "alice",
            )
        ],
    ),
    ("delete-digest", [Ignored("digest_delete", DIGEST)]),
    ("batch-push", [Ignored("blob"), Ignored("blob"), V1, Ignored("pull"), V2]),
    (
        "gitlab-v1-push",
        [
            TagChange(
                "moved",
                "registry.gitlab.com/group/project",
                "latest",
                "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
                "320678d8-ca14-430f-8bb6-4ca139cd83f7",
                datetime(2016, 3, 9, 22, 44, 26, 402973, UTC),
                "urn:ocitag:ingest:distribution:registry.gitlab.com",
                "root",
            )
        ],
    ),
]


@pytest.mark.parametrize(("name", "expected"), CASES, ids=[c[0] for c in CASES])
def test_fixture(name: str, expected: list[Mapped]) -> None:
    body, headers = load_delivery("distribution", name)
    assert distribution.map_delivery(body, headers) == expected


def test_registry_header_overrides_the_request_host() -> None:
    body, headers = load_delivery("distribution", "push-tag")
    [event] = distribution.map_delivery(body, {**headers, "x-ocitag-registry": "reg.example.com"})
    assert isinstance(event, TagChange)
    assert event.repository == "reg.example.com/team/app"
    assert event.source == "urn:ocitag:ingest:distribution:reg.example.com"


def _event(**target: object) -> dict[str, object]:
    return {
        "id": "e1",
        "timestamp": "2026-01-01T00:00:00Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "repository": "a/b",
            "tag": "v1",
            "digest": DIGEST,
            **target,
        },
        "request": {"host": "r.example.com"},
        "actor": {},
    }


MALFORMED: list[tuple[bytes, str]] = [
    (b"not json", "body"),
    (b"[]", "body"),
    (b"{}", "body.events"),
    (b'{"events": {}}', "body.events"),
    (b'{"events": [1]}', "body.events[0]"),
    (b'{"events": [{"action": "push", "target": []}]}', "body.events[0].target"),
]


@pytest.mark.parametrize(("body", "location"), MALFORMED)
def test_malformed_body_names_the_place(body: bytes, location: str) -> None:
    with pytest.raises(MappingError) as caught:
        distribution.map_delivery(body, {})
    assert caught.value.location == location


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"digest": ""}, "body.events[0].target.digest"),
        ({"repository": None}, "body.events[0].target.repository"),
        ({"tag": 5}, "body.events[0].target.tag"),
    ],
)
def test_tagged_push_missing_what_it_needs(change: dict[str, object], location: str) -> None:
    import json

    body = json.dumps({"events": [_event(**change)]}).encode()
    with pytest.raises(MappingError) as caught:
        distribution.map_delivery(body, {})
    assert caught.value.location == location


@pytest.mark.parametrize(
    ("drop", "location"),
    [("id", "body.events[0].id"), ("timestamp", "body.events[0].timestamp")],
)
def test_identity_is_required(drop: str, location: str) -> None:
    import json

    event = _event()
    del event[drop]
    with pytest.raises(MappingError) as caught:
        distribution.map_delivery(json.dumps({"events": [event]}).encode(), {})
    assert caught.value.location == location


def test_bad_timestamp_is_named() -> None:
    import json

    event = {**_event(), "timestamp": "yesterday"}
    with pytest.raises(MappingError) as caught:
        distribution.map_delivery(json.dumps({"events": [event]}).encode(), {})
    assert caught.value.location == "body.events[0].timestamp"
    assert "RFC 3339" in caught.value.message


def test_broken_entries_that_are_ignored_anyway_do_not_fail_the_delivery() -> None:
    body = b'{"events": [{"action": "pull", "target": 7}, {"action": "mount"}, {"x": 1}]}'
    assert distribution.map_delivery(body, {}) == [
        Ignored("pull"),
        Ignored("blob", "mount"),
        Ignored("other_action", ""),
    ]
