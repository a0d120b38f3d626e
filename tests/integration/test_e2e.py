"""End to end: records through a real Kafka topic to the running worker, outcomes and
rows checked. Every row of the contract's status table (docs/contract.md) and every
identifier rule."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from tests.helpers.events import HEX, event
from tests.helpers.harness import Received, Record, binary, running_worker, structured
from worker.settings import Settings

pytestmark = pytest.mark.integration

HEX2 = hashlib.sha256(b"2").hexdigest()
HEX512 = hashlib.sha512(b"x").hexdigest()


def by_cause(outcomes: list[Received]) -> dict[str, dict[str, Any]]:
    return {o.body["causationid"]: o.body for o in outcomes if "causationid" in o.body}


async def test_valid_event_is_applied_and_its_outcome_is_the_ocitag_record(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings()
    async with running_worker(settings) as worker:
        await worker.publish(
            [structured(event("e1", actor="alice"), key=b"docker.io/istio/pilot:1.3.0")]
        )
        (outcome,) = await worker.outcomes(1)
    body = outcome.body
    assert outcome.key == b"docker.io/istio/pilot:1.3.0"
    assert dict(outcome.headers)["content-type"].startswith(b"application/cloudevents+json")
    assert (body["type"], body["status"], body["change"], body["resourceversion"]) == (
        "ocitag.updated.v1",
        200,
        "created",
        1,
    )
    assert (body["subject"], body["causationid"], body["causationsource"]) == (
        "docker.io/istio/pilot:1.3.0",
        "e1",
        "https://registry.example.com/webhook",
    )
    assert body["data"] == {
        "artifact": HEX,
        "repository": "docker.io/istio/pilot",
        "tag": "1.3.0",
        "created_by": "alice",
        "created_on": "2026-11-28T15:00:00Z",
        "last_modified_by": "alice",
        "last_modified_on": "2026-11-28T15:00:00Z",
    }
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM ocitags")
    finally:
        await conn.close()
    assert row is not None
    assert (row["repository"], row["tag"], row["artifact"], row["version"]) == (
        "docker.io/istio/pilot",
        "1.3.0",
        HEX,
        1,
    )


async def test_every_status_of_the_table(make_settings: Callable[..., Settings]) -> None:
    """200 created/updated/unchanged, 400 (and its dead letter), 409 superseded and reused
    id, 412, 422 — one partition, so the order of delivery is the order published."""
    settings = make_settings(topic_partitions=1)
    records = [
        structured(event("created", "2026-11-28T15:00:00Z")),
        binary(event("updated", "2026-11-28T15:00:01Z", artifact="sha256:" + HEX2)),
        structured(event("unchanged", "2026-11-28T15:00:02Z", artifact=HEX2, actor="bob")),
        structured(event("superseded", "2026-11-28T14:00:00Z", artifact=HEX)),
        structured(event("updated", "2026-11-28T15:00:09Z", artifact=HEX)),  # id reused
        structured(
            event("precondition", "2026-11-28T15:00:03Z", artifact=HEX, previous_artifact=HEX)
        ),
        structured(event("version", "2026-11-28T15:00:04Z", artifact=HEX, expected_version=1)),
        structured(event("invalid", "2026-11-28T15:00:05Z", artifact="sha256:xyz", tag="-bad")),
        (
            b"k",
            b"\x00not json",
            [("content-type", b"application/cloudevents+json"), ("trace", b"t1")],
        ),
        structured(
            event(
                "expected-ok",
                "2026-11-28T15:00:06Z",
                artifact=HEX,
                expected_version=3,
                previous_artifact=HEX2,
            )
        ),
    ]
    records.append(records[4])  # the reused id again, as another record: its own outcome id
    async with running_worker(settings) as worker:
        await worker.publish(records)
        outcomes = await worker.outcomes(len(records))
        (dead,) = await worker.collect(settings.topics.dlq_topic, 1)
    got = [
        (o.body["status"], o.body.get("change"), o.body["data"].get("type", "").rsplit("/", 1)[-1])
        for o in outcomes
    ]
    assert got == [
        (200, "created", ""),
        (200, "updated", ""),
        (200, "unchanged", ""),
        (409, None, "superseded"),
        (409, None, "id-reused"),
        (412, None, "precondition-failed"),
        (412, None, "precondition-failed"),
        (422, None, "invalid-data"),
        (400, None, "undecodable"),
        (200, "updated", ""),
        (409, None, "id-reused"),
    ]
    assert outcomes[9].body["resourceversion"] == 4
    # not stored, so built from each record: one id per record, as data.instance differs
    reused = [outcomes[i].body for i in (4, 10)]
    assert [b["data"]["instance"].rsplit(":", 1)[-1] for b in reused] == ["4", "10"]
    assert reused[0]["id"] != reused[1]["id"]
    invalid = outcomes[7].body["data"]
    assert {e["location"] for e in invalid["errors"]} == {"body.data.artifact", "body.data.tag"}
    assert invalid["instance"] == f"urn:kafka:{settings.topics.input_topic}:0:7"
    undecodable = outcomes[8].body
    # attributes with no value are left out, never null
    assert "subject" not in undecodable and outcomes[8].key is None
    assert "causationid" not in undecodable and "causationsource" not in undecodable
    # the dead letter is the original record, its headers, and where and why
    headers = dict(dead.headers)
    assert (dead.key, dead.value, headers["trace"]) == (b"k", b"\x00not json", b"t1")
    assert headers["ocitag_dlq_topic"] == settings.topics.input_topic.encode()
    assert (headers["ocitag_dlq_partition"], headers["ocitag_dlq_offset"]) == (b"0", b"8")
    assert b"UTF-8" in headers["ocitag_dlq_reason"] or b"JSON" in headers["ocitag_dlq_reason"]


IDENTIFIER_CASES: list[tuple[str, dict[str, Any], int, str]] = [
    # (id, data changes, status, the canonical OCITag ID or the location of the broken rule)
    ("official", {"repository": "nginx", "tag": "latest"}, 200, "docker.io/library/nginx:latest"),
    ("no-host", {"repository": "istio/pilot"}, 200, "docker.io/istio/pilot:1.3.0"),
    ("index", {"repository": "index.docker.io/istio/proxy"}, 200, "docker.io/istio/proxy:1.3.0"),
    (
        "registry-1",
        {"repository": "registry-1.docker.io/library/redis"},
        200,
        "docker.io/library/redis:1.3.0",
    ),
    (
        "ecr",
        {"repository": "public.ecr.aws/bottlerocket/bottlerocket-operator", "tag": "0.1"},
        200,
        "public.ecr.aws/bottlerocket/bottlerocket-operator:0.1",
    ),
    (
        "port",
        {"repository": "localhost:5000/team/app", "tag": "v2"},
        200,
        "localhost:5000/team/app:v2",
    ),
    (
        "sha512",
        {"repository": "ghcr.io/a/sha512", "artifact": "sha512:" + HEX512},
        200,
        "ghcr.io/a/sha512:1.3.0",
    ),
    ("bare-hex", {"repository": "ghcr.io/a/bare", "artifact": HEX}, 200, "ghcr.io/a/bare:1.3.0"),
    ("upper-path", {"repository": "ghcr.io/Team/app"}, 422, "body.data.repository"),
    ("long-repo", {"repository": "ghcr.io/" + "a" * 250}, 422, "body.data.repository"),
    ("repo-with-tag", {"repository": "istio/pilot:1.3"}, 422, "body.data.repository"),
    ("bad-separator", {"repository": "istio/pi..lot"}, 422, "body.data.repository"),
    ("bad-tag", {"tag": ".x"}, 422, "body.data.tag"),
    ("long-tag", {"tag": "t" * 129}, 422, "body.data.tag"),
    ("digest-as-tag", {"tag": "sha256:" + HEX}, 422, "body.data.tag"),
    ("upper-digest", {"artifact": HEX.upper()}, 422, "body.data.artifact"),
    ("short-digest", {"artifact": "sha256:" + HEX[:60]}, 422, "body.data.artifact"),
    ("sha1", {"artifact": "sha1:" + HEX[:40]}, 422, "body.data.artifact"),
    ("short-512", {"artifact": "sha512:" + HEX}, 422, "body.data.artifact"),
    ("unknown-member", {"colour": "blue"}, 422, "body.data.colour"),
]


async def test_every_identifier_rule_through_kafka(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    records = [structured(event(case_id, **changes)) for case_id, changes, _, _ in IDENTIFIER_CASES]
    records.append(
        structured(
            dict(event("subject-ok", repository="ghcr.io/s/ok"), subject="ghcr.io/s/ok:1.3.0")
        )
    )
    records.append(
        structured(
            dict(event("subject-bad", repository="ghcr.io/s/bad"), subject="ghcr.io/s/other:1.3.0")
        )
    )
    async with running_worker(settings) as worker:
        await worker.publish(records)
        outcomes = by_cause(await worker.outcomes(len(records)))
    for case_id, _, status, expected in IDENTIFIER_CASES:
        body = outcomes[case_id]
        assert body["status"] == status, (case_id, body)
        if status == 200:
            assert body["subject"] == expected
            data = body["data"]
            assert f"{data['repository']}:{data['tag']}" == expected
        else:
            assert expected in [e["location"] for e in body["data"]["errors"]], (case_id, body)
    assert outcomes["sha512"]["data"]["artifact"] == "sha512:" + HEX512
    assert outcomes["subject-ok"]["status"] == 200
    assert outcomes["subject-bad"]["status"] == 422
    assert outcomes["subject-bad"]["data"]["errors"][0]["location"] == "body.subject"


async def test_envelope_rules_through_kafka_are_400(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(max_event_bytes=2048, topic_partitions=1)
    records = [
        structured(dict(event("v"), specversion="0.3")),
        structured(dict(event("t"), type="com.example.other")),
        structured(dict(event("no-time"), time=None)),
        structured(dict(event("bad-time"), time="28/11/2026")),
        structured(dict(event(""))),
        binary(dict(event("b"), time="later")),
        structured(dict(event("big"), padding="x" * 3000)),
        (None, b'{"specversion": "1.0"', [("content-type", b"application/cloudevents+json")]),
    ]
    async with running_worker(settings) as worker:
        await worker.publish(records)
        outcomes = await worker.outcomes(len(records))
        dead = await worker.collect(settings.topics.dlq_topic, len(records))
    assert [o.body["status"] for o in outcomes] == [400] * len(records)
    kinds = [o.body["data"]["type"].rsplit("/", 1)[-1] for o in outcomes]
    assert kinds == [
        "invalid-envelope",
        "unknown-type",
        "invalid-envelope",
        "invalid-envelope",
        "invalid-envelope",
        "invalid-envelope",
        "too-large",
        "undecodable",
    ]
    assert outcomes[5].body["data"]["errors"][0]["location"] == "headers.ce_time"
    assert len(dead) == len(records)


async def test_duplicates_get_the_first_outcome_byte_identical(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(topic_partitions=1)
    first = structured(event("dup", actor="alice"))
    async with running_worker(settings) as worker:
        await worker.publish([first])
        (one,) = await worker.outcomes(1)
        await worker.publish([first, binary(event("dup", actor="alice"))])
        outcomes = await worker.outcomes(3)
    assert outcomes[1].value == one.value == outcomes[2].value
    assert json.loads(one.value)["data"]["created_by"] == "alice"


async def test_the_same_event_spelled_by_another_client_is_a_duplicate(
    make_settings: Callable[..., Settings],
) -> None:
    """Content is compared by meaning: another spelling of the instant, the short
    repository, the prefixed digest, other member order and white space, the other
    content mode — each gets the first outcome byte for byte, not a 409 id-reused."""
    settings = make_settings(topic_partitions=1)

    def spellings(event_id: str, tag: str) -> tuple[Record, Record, Record]:
        first = event(event_id, "2026-11-28T10:00:02.5Z", tag=tag, actor="alice")
        again = event(
            event_id,
            "2026-11-28T17:30:02.500000+07:30",
            repository="istio/pilot",
            tag=tag,
            artifact="sha256:" + HEX,
            actor="alice",
        )
        again["data"] = dict(reversed(list(again["data"].items())))
        spaced = (None, json.dumps(again, indent=2).encode(), structured(again)[2])
        return structured(first), spaced, binary(again)

    a_first, a_spaced, a_binary = spellings("spelled-a", "a")
    b_first, b_spaced, b_binary = spellings("spelled-b", "b")
    async with running_worker(settings) as worker:
        await worker.publish([a_first])
        await worker.outcomes(1)
        # a duplicate of an event of an earlier batch (its stored outcome) ...
        await worker.publish([a_spaced, a_binary])
        await worker.outcomes(3)
        # ... and of an event first processed in the same batch
        await worker.publish([b_first, b_spaced, b_binary])
        outcomes = await worker.outcomes(6)
    assert [(o.body["status"], o.body.get("change")) for o in outcomes] == [(200, "created")] * 6
    assert outcomes[1].value == outcomes[0].value == outcomes[2].value
    assert outcomes[4].value == outcomes[3].value == outcomes[5].value


async def test_outcomes_are_keyed_and_ordered_per_tag(
    make_settings: Callable[..., Settings],
) -> None:
    """Outcomes go to the partition Kafka's Java clients would pick for the key, and a
    tag's outcomes appear in the order its events were applied."""
    from aiokafka.partitioner import DefaultPartitioner

    settings = make_settings()
    records = [
        structured(
            event(f"k{n}", f"2026-11-28T15:00:{n:02d}Z", repository=f"ghcr.io/k/app{n % 7}"),
            key=f"ghcr.io/k/app{n % 7}:1.3.0".encode(),
        )
        for n in range(42)
    ]
    async with running_worker(settings) as worker:
        await worker.publish(records)
        outcomes = await worker.outcomes(len(records))
    partitioner = DefaultPartitioner()
    versions: dict[bytes, list[int]] = {}
    for o in sorted(outcomes, key=lambda o: (o.partition, o.offset)):
        assert o.key is not None
        assert o.partition == partitioner(o.key, [0, 1, 2], [0, 1, 2])
        versions.setdefault(o.key, []).append(o.body["resourceversion"])
    assert len(versions) == 7
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
