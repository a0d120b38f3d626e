"""The zot mapper on CloudEvents as zot's events extension sends them (binary and
structured), and the same events sent by the real CloudEvents SDK."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from tests.helpers.ingest import load_delivery
from worker.ingest import zot
from worker.ingest.mapping import Ignored, Mapped, MappingError, TagChange

REGISTRY = {"x-ocitag-registry": "zot.example.com:5000"}
SOURCE = "urn:ocitag:ingest:zot:zot.example.com:5000"
DIGEST = "sha256:7f2b5f3ab3e6e3f5c4b4b0e2b9a5d0f8c1e6a7d3b2c9e8f1a0b3c4d5e6f7a8b9"

CASES: list[tuple[str, list[Mapped]]] = [
    (
        "updated-structured",
        [
            TagChange(
                "moved",
                "zot.example.com:5000/golang",
                "latest",
                DIGEST,
                "8d1f0d36-6d4e-4a8b-9b1e-3f5a2c7e9d10",
                datetime(2025, 6, 11, 9, 30, 12, 123456, UTC),
                SOURCE,
            )
        ],
    ),
    (
        "updated-binary",
        [
            TagChange(
                "moved",
                "zot.example.com:5000/team/app",
                "v2",
                DIGEST,
                "0c0f4b6e-2a51-4c0e-8b57-7d7b2f1c6a01",
                datetime(2025, 6, 11, 9, 31, 0, 500000, UTC),
                SOURCE,
            )
        ],
    ),
    (
        "deleted-tag",
        [
            TagChange(
                "deleted",
                "zot.example.com:5000/golang",
                "latest",
                None,
                "5e2c7a8b-1d3f-4e6a-9b0c-2d4e6f8a0b1c",
                datetime(2025, 6, 11, 9, 32, 0, tzinfo=UTC),
                SOURCE,
            )
        ],
    ),
    ("deleted-digest", [Ignored("digest_delete", DIGEST)]),
    ("repository-created", [Ignored("repository_created")]),
    ("lint-failed", [Ignored("lint")]),
]


@pytest.mark.parametrize(("name", "expected"), CASES, ids=[c[0] for c in CASES])
def test_fixture(name: str, expected: list[Mapped]) -> None:
    body, headers = load_delivery("zot", name)
    assert zot.map_delivery(body, {**headers, **REGISTRY}) == expected


def test_without_a_registry_host_the_delivery_is_refused_naming_the_fix() -> None:
    body, headers = load_delivery("zot", "updated-binary")
    with pytest.raises(MappingError) as caught:
        zot.map_delivery(body, headers)
    assert caught.value.location == "query.registry"
    assert "?registry=" in caught.value.message


def test_a_source_url_names_the_host() -> None:
    event = _sdk_event(source="https://zot.internal:8443/events")
    message = ce_http.to_structured(event, JSONFormat())
    [mapped] = zot.map_delivery(message.body, _lower(message.headers))
    assert isinstance(mapped, TagChange)
    assert mapped.repository == "zot.internal:8443/golang"


def _sdk_event(source: str = "zotregistry.dev") -> CloudEvent:
    return CloudEvent(
        attributes={
            "type": zot.UPDATED,
            "source": source,
            "id": "sdk-1",
            "time": datetime(2025, 6, 11, 9, 30, tzinfo=UTC),
            "datacontenttype": "application/json",
        },
        data={"name": "golang", "reference": "1.22", "digest": DIGEST, "mediaType": "x"},
    )


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_the_cloudevents_sdk_in_both_modes(mode: str) -> None:
    convert = ce_http.to_binary if mode == "binary" else ce_http.to_structured
    message = convert(_sdk_event(), JSONFormat())
    [mapped] = zot.map_delivery(message.body, {**_lower(message.headers), **REGISTRY})
    assert mapped == TagChange(
        "moved",
        "zot.example.com:5000/golang",
        "1.22",
        DIGEST,
        "sdk-1",
        datetime(2025, 6, 11, 9, 30, tzinfo=UTC),
        SOURCE,
    )


@pytest.mark.parametrize(
    ("body", "headers", "location"),
    [
        (b"{", {"content-type": "application/cloudevents+json"}, "body"),
        (
            b'{"specversion": "0.3"}',
            {"content-type": "application/cloudevents+json"},
            "body.specversion",
        ),
        (b"<xml/>", {"content-type": "text/xml"}, "headers.content-type"),
        (
            b'{"specversion": "1.0", "type": "zotregistry.image.updated", "data": 3}',
            {"content-type": "application/cloudevents+json"},
            "body.data",
        ),
        (
            b'{"name": "a"}',
            {"ce-specversion": "1.0", "ce-type": "zotregistry.image.updated"},
            "body.reference",
        ),
    ],
)
def test_malformed(body: bytes, headers: dict[str, str], location: str) -> None:
    with pytest.raises(MappingError) as caught:
        zot.map_delivery(body, {**headers, **REGISTRY})
    assert caught.value.location == location
