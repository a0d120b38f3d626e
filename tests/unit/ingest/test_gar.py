"""GAR/GCR mapper on Pub/Sub push fixtures built from Google's documentation."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest

from tests.helpers.ingest_fixtures import events, fixture, summary
from worker.ingest import gar
from worker.ingest.mapping import MappingError

AR = "us-east1-docker.pkg.dev/my-project/my-repo/hello-world"
D = "sha256:6ec128e26cd5d2f7cd2fd1fd1a9b7f3a2c1a7a4b5ed6f2a8f3d1c6d0e3a49e5b"
UNWRAPPED = {
    "x-goog-pubsub-message-id": "9001",
    "x-goog-pubsub-publish-time": "2024-05-01T12:00:00.5Z",
    "x-goog-pubsub-subscription-name": "projects/acme/subscriptions/ocitag",
}


@pytest.mark.parametrize(
    ("name", "headers", "expected"),
    [
        ("insert_tag.json", {}, [("moved", AR, "1.1", D, None)]),
        ("delete_tag.json", {}, [("deleted", AR, "1.1", None, None)]),
        ("gcr_insert_tag.json", {}, [("moved", "gcr.io/my-project/hello-world", "1.1", D, None)]),
        ("insert_digest_only.json", {}, [("ignored", "untagged")]),
        ("delete_digest.json", {}, [("ignored", "digest_delete")]),
        (
            "unwrapped_insert_tag.json",
            UNWRAPPED,
            [("moved", "europe-docker.pkg.dev/acme/prod/team/api", "v2", D, None)],
        ),
    ],
)
def test_fixture_maps_to(
    name: str, headers: dict[str, str], expected: list[tuple[object, ...]]
) -> None:
    assert summary(gar.map_delivery(fixture("gar", name), headers)) == expected


def test_identity_is_the_pubsub_message_id_and_publish_time() -> None:
    [event] = events(gar.map_delivery(fixture("gar", "insert_tag.json"), {}))
    assert event.event_id == "2070443601311540"
    assert event.time == datetime(2021, 2, 26, 19, 13, 55, 749000, tzinfo=UTC)
    assert event.source == "urn:ocitag:ingest:gar:us-east1-docker.pkg.dev"
    [deleted] = events(gar.map_delivery(fixture("gar", "delete_tag.json"), {}))
    assert deleted.time == datetime(2021, 2, 27, 8, 0, 0, 123456, tzinfo=UTC)  # ns truncated
    [unwrapped] = events(gar.map_delivery(fixture("gar", "unwrapped_insert_tag.json"), UNWRAPPED))
    assert (unwrapped.event_id, unwrapped.time) == (
        "9001",
        datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC),
    )


def _envelope(content: object, **message: object) -> bytes:
    payload = orjson.loads(fixture("gar", "insert_tag.json"))
    if content is not None:
        payload["message"]["data"] = base64.b64encode(orjson.dumps(content)).decode()
    payload["message"].update(message)
    return orjson.dumps(payload)


@pytest.mark.parametrize(
    ("body", "headers", "location"),
    [
        (b"", {}, "body"),
        (b"{}", {}, "body.message"),
        (b'{"message": "hi"}', {}, "body.message"),
        (_envelope(None, data="%%%not base64"), {}, "body.message.data"),
        (_envelope(None, data=base64.b64encode(b"{nope").decode()), {}, "body.message.data"),
        (_envelope([1]), {}, "body.message.data"),
        (_envelope(None, data=None), {}, "body.message.data"),
        (_envelope(None, messageId=None, message_id=None), {}, "body.message.message_id"),
        (_envelope(None, publishTime="yesterday"), {}, "body.message.publishTime"),
        (
            _envelope({"action": "INSERT", "tag": f"{AR}:1.1", "digest": f"{AR}@sha256:abc"}),
            {},
            "body.message.data.digest",
        ),
        (_envelope({"action": "INSERT", "tag": f"{AR}:1.1"}), {}, "body.message.data.digest"),
        (_envelope({"action": "DELETE", "tag": f"{AR}"}), {}, "body.message.data.tag"),
        (
            _envelope({"action": "DELETE", "tag": "Us-East1-docker.pkg.dev/P/R:1"}),
            {},
            "body.message.data.tag",
        ),
        (fixture("gar", "unwrapped_insert_tag.json"), {}, "headers.x-goog-pubsub-message-id"),
        (
            fixture("gar", "unwrapped_insert_tag.json"),
            {**UNWRAPPED, "x-goog-pubsub-publish-time": "noon"},
            "headers.x-goog-pubsub-publish-time",
        ),
    ],
)
def test_malformed_body_names_the_location(
    body: bytes, headers: dict[str, str], location: str
) -> None:
    with pytest.raises(MappingError) as caught:
        gar.map_delivery(body, headers)
    assert caught.value.location == location


def test_digest_only_entries_are_ignored_however_broken() -> None:
    body = _envelope({"action": "DELETE", "digest": "not a digest"})
    assert summary(gar.map_delivery(body, {})) == [("ignored", "digest_delete")]
