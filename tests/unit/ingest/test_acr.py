"""ACR mapper: webhooks and Event Grid (both schemas) on fixtures from Microsoft's docs."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from tests.helpers.ingest_fixtures import events, fixture, summary
from worker.ingest import acr
from worker.ingest.mapping import Handshake, MappingError

D = "sha256:213179ba0b1a5bf9f6d4d1aa3b4bf4f3b6b6ce9d6f48d5f5bc9a6c4c3c1b8c7b"
REG = "myregistry.azurecr.io"
DEMO = "demoregistry.azurecr.io"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("webhook_push.json", [("moved", f"{REG}/hello-world", "v1", D, None)]),
        ("webhook_delete_tag.json", [("deleted", f"{REG}/team/api", "old", None, None)]),
        ("webhook_delete.json", [("ignored", "digest_delete")]),
        ("webhook_chart_push.json", [("ignored", "not_container")]),
        ("webhook_ping.json", [("ignored", "ping")]),
        (
            "eventgrid_batch.json",
            [("moved", f"{DEMO}/aci-helloworld", "v1", D, "ci-bot"), ("ignored", "digest_delete")],
        ),
        (
            "eventgrid_validation.json",
            [("handshake", {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})],
        ),
        ("cloudevents_push.json", [("moved", f"{DEMO}/aci-helloworld", "v2", D, "ci-bot")]),
        (
            "cloudevents_batch.json",
            [("moved", f"{DEMO}/aci-helloworld", "v2", D, "ci-bot"), ("ignored", "not_container")],
        ),
    ],
)
def test_fixture_maps_to(name: str, expected: list[tuple[object, ...]]) -> None:
    assert summary(acr.map_delivery(fixture("acr", name), {})) == expected


def test_identity_per_format() -> None:
    [hook] = events(acr.map_delivery(fixture("acr", "webhook_push.json"), {}))
    assert (hook.event_id, hook.time) == (
        "cb8c3971-9adc-488b-bdd8-43cbb4974ff5",
        datetime(2017, 11, 17, 16, 52, 1, 343145, tzinfo=UTC),
    )
    assert hook.source == f"urn:ocitag:ingest:acr:{REG}"
    [grid] = events(acr.map_delivery(fixture("acr", "eventgrid_batch.json"), {}))
    assert (grid.event_id, grid.time) == (
        "831e1650-001e-001b-66ab-eeb76e069631",
        datetime(2018, 4, 25, 21, 39, 47, 654961, tzinfo=UTC),
    )
    [ce] = events(acr.map_delivery(fixture("acr", "cloudevents_push.json"), {}))
    assert (ce.event_id, ce.time) == (
        "831e1650-001e-001b-66ab-eeb76e069632",
        datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=UTC),
    )


def test_the_validation_handshake_is_answered_with_the_code() -> None:
    [handshake] = acr.map_delivery(fixture("acr", "eventgrid_validation.json"), {})
    assert isinstance(handshake, Handshake)
    assert handshake.body == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}


def _edit(name: str, path: list[str | int], value: object) -> bytes:
    payload = orjson.loads(fixture("acr", name))
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return orjson.dumps(payload)


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (b"nul", "body"),
        (b"true", "body"),
        (b"[7]", "body[0]"),
        (fixture("acr", "webhook_push_doc_sample.json"), "body.target.digest"),
        (_edit("webhook_push.json", ["id"], None), "body.id"),
        (_edit("webhook_push.json", ["timestamp"], "2017-11-17"), "body.timestamp"),
        (_edit("webhook_push.json", ["request"], None), "body.request.host"),
        (_edit("webhook_push.json", ["request", "host"], "a.io/b"), "body.request.host"),
        (_edit("webhook_push.json", ["target", "repository"], "Hello"), "body.target.repository"),
        (_edit("webhook_push.json", ["target", "tag"], "v1:2"), "body.target.tag"),
        (_edit("webhook_push.json", ["target"], "x"), "body.target"),
        (_edit("eventgrid_batch.json", [0, "eventTime"], None), "body[0].eventTime"),
        (_edit("eventgrid_batch.json", [0, "eventType"], None), "body[0].eventType"),
        (
            _edit("eventgrid_batch.json", [0, "data", "target", "digest"], None),
            "body[0].data.target.digest",
        ),
        (
            _edit("eventgrid_validation.json", [0, "data", "validationCode"], 5),
            "body[0].data.validationCode",
        ),
        (_edit("cloudevents_push.json", ["time"], "now"), "body.time"),
        (_edit("cloudevents_push.json", ["data"], []), "body.data"),
    ],
)
def test_malformed_body_names_the_location(body: bytes, location: str) -> None:
    with pytest.raises(MappingError) as caught:
        acr.map_delivery(body, {})
    assert caught.value.location == location


def test_broken_entries_that_are_ignored_anyway_are_not_errors() -> None:
    body = _edit("eventgrid_batch.json", [1, "eventTime"], "not a time")
    assert summary(acr.map_delivery(body, {}))[1] == ("ignored", "digest_delete")
    assert summary(acr.map_delivery(fixture("acr", "webhook_chart_push.json"), {})) == [
        ("ignored", "not_container")
    ]
