"""The cloudevents kind: tag events themselves over HTTP, the sender's identity kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from tests.helpers.ingest import load_delivery
from worker.ingest import cloudevents
from worker.ingest.mapping import Mapped, MappingError, TagChange

ART = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

CASES: list[tuple[str, list[Mapped]]] = [
    (
        "moved-structured",
        [
            TagChange(
                "moved",
                "istio/pilot",
                "1.3.0",
                ART,
                "build-4711",
                datetime(2026, 11, 28, 15, 12, 2, 500000, UTC),
                "https://ci.example.com/pipelines",
                "ci-bot",
                expected_version=3,
            )
        ],
    ),
    (
        "deleted-binary",
        [
            TagChange(
                "deleted",
                "ghcr.io/org/app",
                "pr-12",
                None,
                "cleanup-17",
                datetime(2026, 11, 28, 16, 0, tzinfo=timezone(timedelta(hours=1))),
                "urn:example:janitor",
            )
        ],
    ),
    (
        "batch",
        [
            TagChange(
                "moved",
                "localhost:5000/team/app",
                "v1",
                f"sha256:{ART}",
                "b-1",
                datetime(2026, 11, 28, 15, 0, tzinfo=UTC),
                "urn:example:batch",
            ),
            TagChange(
                "deleted",
                "localhost:5000/team/app",
                "v0",
                None,
                "b-2",
                datetime(2026, 11, 28, 15, 0, 1, tzinfo=UTC),
                "urn:example:batch",
            ),
        ],
    ),
]


@pytest.mark.parametrize(("name", "expected"), CASES, ids=[c[0] for c in CASES])
def test_fixture(name: str, expected: list[Mapped]) -> None:
    body, headers = load_delivery("cloudevents", name)
    assert cloudevents.map_delivery(body, headers) == expected


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_sent_by_the_sdk(mode: str) -> None:
    event = CloudEvent(
        attributes={
            "type": cloudevents.MOVED,
            "source": "urn:example:sdk",
            "id": "x-1",
            "time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "subject": "docker.io/library/nginx:1.27",
            "datacontenttype": "application/json",
        },
        data={"repository": "nginx", "tag": "1.27", "artifact": ART},
    )
    convert = ce_http.to_binary if mode == "binary" else ce_http.to_structured
    message = convert(event, JSONFormat())
    headers = {k.lower(): v for k, v in message.headers.items()}
    [mapped] = cloudevents.map_delivery(message.body, headers)
    assert isinstance(mapped, TagChange)
    assert (mapped.source, mapped.event_id, mapped.digest) == ("urn:example:sdk", "x-1", ART)
    assert mapped.time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _structured(event: dict[str, object]) -> bytes:
    import json

    base: dict[str, object] = {
        "specversion": "1.0",
        "id": "1",
        "source": "urn:s",
        "type": "ocitag.moved.v1",
        "time": "2026-01-01T00:00:00Z",
        "data": {"repository": "a/b", "tag": "t", "artifact": ART},
    }
    base.update(event)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


STRUCTURED = {"content-type": "application/cloudevents+json"}


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"type": "com.example.other"}, "body.type"),
        ({"id": None}, "body.id"),
        ({"time": "2026-01-01 00:00"}, "body.time"),
        ({"data": {"repository": "a/b", "tag": "t"}}, "body.data.artifact"),
        ({"data": {"repository": "a/b", "tag": "t", "artifact": ART, "x": 1}}, "body.data.x"),
        ({"type": "ocitag.deleted.v1"}, "body.data.artifact"),
        ({"subject": "docker.io/a/b:other"}, "body.subject"),
        ({"datacontenttype": "text/plain"}, "body.datacontenttype"),
        (
            {"data": {"repository": "a/b", "tag": "t", "artifact": ART, "expected_version": -1}},
            "body.data.expected_version",
        ),
    ],
)
def test_invalid_events_are_named(change: dict[str, object], location: str) -> None:
    with pytest.raises(MappingError) as caught:
        cloudevents.map_delivery(_structured(change), STRUCTURED)
    assert caught.value.location == location


def test_binary_mode_data_content_type_is_named_as_the_content_type_header() -> None:
    """In HTTP binary mode ``datacontenttype`` is the Content-Type header (there is no
    ``ce-datacontenttype``): a sender posting form data (curl -d) must be told to fix
    that header."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "urn:s",
        "ce-type": "ocitag.moved.v1",
        "ce-time": "2026-01-01T00:00:00Z",
        "content-type": "application/x-www-form-urlencoded",
    }
    body = b'{"repository": "a/b", "tag": "t", "artifact": "' + ART.encode() + b'"}'
    with pytest.raises(MappingError) as caught:
        cloudevents.map_delivery(body, headers)
    assert caught.value.location == "headers.content-type"
    assert caught.value.value == "application/x-www-form-urlencoded"
