"""Deletions end to end: ``ocitag.deleted.v1`` records through a real Kafka topic to the
running worker, in both content modes; every status of the deletion rules (docs/contract.md
"Deletion") with its outcome checked against schemas/ and the seed (the harness checks
every outcome it collects), and the rows (tombstones, ``live_ocitags``) checked."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from tests.helpers.harness import Record, binary, running_worker, structured
from worker.settings import Settings

pytestmark = pytest.mark.integration

HEX = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
HEX2 = hashlib.sha256(b"2").hexdigest()
SOURCE = "https://registry.example.com/webhook"
TAG = "docker.io/istio/pilot:1.3.0"


def moved(event_id: str, second: int, **data: Any) -> dict[str, Any]:
    body = {"repository": "istio/pilot", "tag": "1.3.0", "artifact": HEX, **data}
    return _event(event_id, "ocitag.moved.v1", second, body)


def deleted(event_id: str, second: int, **data: Any) -> dict[str, Any]:
    body = {"repository": "istio/pilot", "tag": "1.3.0", **data}
    return _event(event_id, "ocitag.deleted.v1", second, body)


def _event(event_id: str, type_: str, second: int, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": type_,
        "time": f"2026-11-28T15:00:{second:02d}Z",
        "subject": TAG,
        "data": data,
    }


def _ocitag(created_by: str, created: int, modified_by: str, modified: int) -> dict[str, str]:
    return {
        "artifact": HEX,
        "repository": "docker.io/istio/pilot",
        "tag": "1.3.0",
        "created_by": created_by,
        "created_on": f"2026-11-28T15:00:{created:02d}Z",
        "last_modified_by": modified_by,
        "last_modified_on": f"2026-11-28T15:00:{modified:02d}Z",
    }


#: (event, status, change or problem slug, resourceversion) in delivery order
HISTORY: list[tuple[dict[str, Any], int, str, int | None]] = [
    # a deletion of a tag never seen: 404, yet a tombstone at version 0 records its key
    (deleted("gone", 10, actor="reaper"), 404, "not-found", None),
    (moved("late", 5), 409, "superseded", None),  # older than that deletion
    (moved("create", 20, actor="alice"), 200, "created", 1),
    (deleted("wrong-artifact", 21, previous_artifact=HEX2), 412, "precondition-failed", None),
    (deleted("wrong-version", 21, expected_version=2), 412, "precondition-failed", None),
    (deleted("remove", 30, actor="bob", expected_version=1), 200, "deleted", 2),
    (deleted("remove-again", 31, actor="carol"), 404, "not-found", None),
    (moved("before-delete", 25), 409, "superseded", None),  # older than the tombstone
    (deleted("older-delete", 29), 409, "superseded", None),
    # for preconditions a deleted tag does not exist
    (moved("needs-artifact", 40, previous_artifact=HEX), 412, "precondition-failed", None),
    (moved("needs-version", 40, expected_version=2), 412, "precondition-failed", None),
    # an artifact member on a deletion is an unknown member: 422 naming it
    (deleted("with-artifact", 41, artifact=HEX), 422, "invalid-data", None),
    # a move with the id of an applied deletion is a reuse
    (moved("remove", 42), 409, "id-reused", None),
    # a newer move brings it back, the version counting on
    (moved("recreate", 50, actor="dave", expected_version=0), 200, "created", 3),
    (deleted("final", 59, actor="erin"), 200, "deleted", 4),
]


def _kind(body: dict[str, Any]) -> str:
    if body["status"] == 200:
        return str(body["change"])
    return str(body["data"]["type"]).rsplit("/", 1)[-1]


@pytest.mark.parametrize("mode", ["structured", "binary"])
async def test_every_status_of_the_deletion_rules(
    make_settings: Callable[..., Settings], database_url: str, mode: str
) -> None:
    settings = make_settings(topic_partitions=1)  # one partition: outcomes in input order
    to_record = structured if mode == "structured" else binary
    records: list[Record] = [to_record(ev, key=TAG.encode()) for ev, *_ in HISTORY]
    replayed = records[5]  # the applied deletion, delivered again
    async with running_worker(settings) as worker:
        await worker.publish([*records, replayed])
        outcomes = await worker.outcomes(len(records) + 1)

    got = [(o.body["status"], _kind(o.body), o.body.get("resourceversion")) for o in outcomes]
    assert got[:-1] == [(status, what, version) for _, status, what, version in HISTORY]
    assert outcomes[-1].value == outcomes[5].value  # a replay: byte-identical
    assert all(o.key == TAG.encode() for o in outcomes)

    by_id = {o.body["causationid"]: o.body for o in outcomes[:-1] if o.body["status"] != 409}
    removed = by_id["remove"]
    assert removed["type"] == "ocitag.removed.v1"
    assert removed["datacontenttype"] == "application/json"
    assert removed["data"] == _ocitag("alice", 20, "alice", 20)  # the record as it was
    assert by_id["final"]["data"] == _ocitag("dave", 50, "dave", 50)

    gone = by_id["gone"]
    assert (gone["type"], gone["data"]["status"], gone["subject"]) == (
        "ocitag.rejected.v1",
        404,
        TAG,
    )
    assert "never seen" in gone["data"]["detail"]
    assert "already deleted" in by_id["remove-again"]["data"]["detail"]
    member = "body.artifact" if mode == "binary" else "body.data.artifact"
    assert [(e["location"], e["value"]) for e in by_id["with-artifact"]["data"]["errors"]] == [
        (member, HEX)
    ]
    assert (
        "is not a member of tag-deleted data"
        in (by_id["with-artifact"]["data"]["errors"][0]["message"])
    )

    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM ocitags")
        live = await conn.fetchval("SELECT count(*) FROM live_ocitags")
    finally:
        await conn.close()
    assert row is not None and live == 0
    assert (row["version"], row["artifact"], row["created_by"], row["deleted_by"]) == (
        4,
        HEX,
        "dave",
        "erin",
    )
    assert row["deleted_on"] == row["last_modified_on"]
    assert (row["last_event_source"], row["last_event_id"]) == (SOURCE, "final")


async def test_a_recreated_tag_is_live_again(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """Both modes on one topic: the deletion in binary mode, the moves structured."""
    settings = make_settings()
    async with running_worker(settings) as worker:
        await worker.publish([structured(moved("m1", 1, actor="alice"), key=TAG.encode())])
        await worker.outcomes(1)
        await worker.publish([binary(deleted("d1", 2), key=TAG.encode())])
        await worker.outcomes(2)
        await worker.publish(
            [structured(moved("m2", 3, artifact=HEX2, actor="bob"), key=TAG.encode())]
        )
        *_, back = await worker.outcomes(3)
    assert (back.body["change"], back.body["resourceversion"]) == ("created", 3)
    assert (back.body["data"]["created_by"], back.body["data"]["created_on"]) == (
        "bob",
        "2026-11-28T15:00:03Z",
    )
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM live_ocitags")
    finally:
        await conn.close()
    assert row is not None
    assert (row["artifact"], row["version"], row["created_by"]) == (HEX2, 3, "bob")
