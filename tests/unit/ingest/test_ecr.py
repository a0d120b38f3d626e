"""ECR mapper on fixtures from the Amazon ECR user guide's EventBridge samples."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from tests.helpers.ingest_fixtures import events, fixture, summary
from worker.ingest import ecr
from worker.ingest.mapping import MappingError

IDX = "sha256:3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea"
HOST = "123456789012.dkr.ecr.us-west-2.amazonaws.com"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("push.json", [("moved", f"{HOST}/team/web-api", "v3.1.0", IDX, None)]),
        (
            "delete.json",
            [
                (
                    "deleted",
                    "210987654321.dkr.ecr.eu-central-1.amazonaws.com/team/web-api",
                    "v3.1.0",
                    None,
                    None,
                )
            ],
        ),
        (
            "push_china.json",
            [
                (
                    "moved",
                    "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/app",
                    "stable",
                    IDX,
                    None,
                )
            ],
        ),
        ("push_platform_manifest.json", [("ignored", "untagged")]),
        ("delete_by_digest.json", [("ignored", "digest_delete")]),
        ("push_failure.json", [("ignored", "failed")]),
        ("scan.json", [("ignored", "scan")]),
        ("pull_through_cache.json", [("ignored", "other_event")]),
        (
            "batch.json",
            [
                ("ignored", "untagged"),
                ("moved", f"{HOST}/team/web-api", "v3.1.0", IDX, None),
                (
                    "deleted",
                    "210987654321.dkr.ecr.eu-central-1.amazonaws.com/team/web-api",
                    "v3.1.0",
                    None,
                    None,
                ),
            ],
        ),
    ],
)
def test_fixture_maps_to(name: str, expected: list[tuple[object, ...]]) -> None:
    assert summary(ecr.map_delivery(fixture("ecr", name), {})) == expected


def test_identity_is_the_eventbridge_id_and_time() -> None:
    [event] = events(ecr.map_delivery(fixture("ecr", "push.json"), {}))
    assert event.event_id == "4f1a9c2e-7d3b-0a5e-9c61-2b8e4d7f1a03"
    assert event.time == datetime(2025, 1, 21, 8, 3, 21, tzinfo=UTC)
    assert event.source == f"urn:ocitag:ingest:ecr:{HOST}"


def _edit(path: list[str], value: object) -> bytes:
    payload = orjson.loads(fixture("ecr", "push.json"))
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return orjson.dumps(payload)


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (b"{", "body"),
        (b"42", "body"),
        (b"[42]", "body[0]"),
        (b"{}", "body.detail-type"),
        (fixture("ecr", "push_doc_sample.json"), "body.detail.image-digest"),
        (_edit(["detail", "image-digest"], None), "body.detail.image-digest"),
        (_edit(["detail", "image-digest"], "md5:abc"), "body.detail.image-digest"),
        (_edit(["detail", "repository-name"], "Team/Web"), "body.detail.repository-name"),
        (_edit(["detail", "image-tag"], ".hidden"), "body.detail.image-tag"),
        (_edit(["detail"], ["PUSH"]), "body.detail"),
        (_edit(["account"], "1234"), "body.account"),
        (_edit(["region"], "mars/1"), "body.region"),
        (_edit(["id"], None), "body.id"),
        (_edit(["time"], "2025-01-21"), "body.time"),
    ],
)
def test_malformed_body_names_the_location(body: bytes, location: str) -> None:
    with pytest.raises(MappingError) as caught:
        ecr.map_delivery(body, {})
    assert caught.value.location == location


def test_broken_entries_that_are_ignored_anyway_are_not_errors() -> None:
    payload = orjson.loads(fixture("ecr", "delete_by_digest.json"))
    payload["detail"]["image-digest"] = "sha256:short"
    payload["account"] = "not-an-account"
    assert summary(ecr.map_delivery(orjson.dumps(payload), {})) == [("ignored", "digest_delete")]
