"""The state topic end to end (docs/subscribers.md): created compacted with the input
topic's partitions; one record per applied change (an ``unchanged`` one included, a
tombstone for a deletion, none for a rejection) read back by kcat; ``state verify`` in
step, then out of step; a redelivered batch republishes the tag as it now is; off when
the setting is empty; ``state backfill`` fills in the tags from before the topic."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from tests.helpers.cli import env_for, run_cli
from tests.helpers.clients import kcat_read_state
from tests.helpers.contract import errors_of, schema_validator
from tests.helpers.events import HEX
from tests.helpers.harness import running_worker, structured
from worker.encode import build_event
from worker.kafka import missing_topics, partition_count, topic_config
from worker.settings import Settings

pytestmark = pytest.mark.integration

TAG = "docker.io/istio/pilot:1.3.0"
OTHER = "docker.io/istio/proxy:2.0"
HEX2 = "ab" * 32


def at(second: int) -> str:
    return f"2026-11-28T15:00:{second:02d}Z"


def history() -> list[dict[str, Any]]:
    return [
        build_event(TAG, HEX, actor="alice", event_id="e1", time=at(1)),  # created v1
        build_event(TAG, HEX2, actor="bob", event_id="e2", time=at(2)),  # updated v2
        build_event(TAG, HEX2, actor="carol", event_id="e3", time=at(3)),  # unchanged v3
        build_event(TAG, HEX, actor="old", event_id="e0", time=at(0)),  # 409: nothing
        build_event(TAG, None, actor="dan", event_id="e4", time=at(4)),  # deleted v4
        build_event(OTHER, HEX, actor="erin", event_id="e5", time=at(5)),  # created v1
        build_event("docker.io/istio/none:1", None, event_id="e6", time=at(6)),  # 404
    ]


async def test_each_applied_change_is_one_state_record_read_back_by_kcat(
    make_settings: Callable[..., Settings], kcat: str
) -> None:
    settings = make_settings(topic_partitions=3)
    events = history()
    async with running_worker(settings) as worker:
        await worker.publish([structured(e, key=e["subject"].encode()) for e in events])
        await worker.outcomes(len(events))
    state = settings.topics.state_topic
    assert await partition_count(settings, state) == 3
    assert await topic_config(settings, state, "cleanup.policy") == "compact"
    assert await topic_config(settings, state, "min.compaction.lag.ms") == "3600000"
    assert await topic_config(settings, state, "delete.retention.ms") == "604800000"

    read = kcat_read_state(settings.kafka.kafka_bootstrap_servers, state)
    mine = [(v, h["version"]) for k, v, h in read if k == TAG]
    assert [h for _, h in mine] == ["1", "2", "3", "4"]
    values = [json.loads(v) if v is not None else None for v, _ in mine]
    assert [v and (v["artifact"], v["last_modified_by"], v["version"]) for v in values] == [
        (HEX, "alice", 1),
        (HEX2, "bob", 2),
        (HEX2, "carol", 3),  # unchanged: a new version and a new last modification
        None,  # the deletion: a tombstone
    ]
    assert values[0] == {
        "artifact": HEX,
        "repository": "docker.io/istio/pilot",
        "tag": "1.3.0",
        "created_by": "alice",
        "created_on": "2026-11-28T15:00:01Z",
        "last_modified_by": "alice",
        "last_modified_on": "2026-11-28T15:00:01Z",
        "version": 1,
    }
    assert {k for k, _, _ in read} == {TAG, OTHER}  # the 404 and the 409 produce nothing
    schema = schema_validator("state-record.schema.json")
    assert [errors_of(schema, json.loads(v)) for _, v, _ in read if v is not None] == [[]] * 4
    assert all(h["content-type"] == "application/json" for _, _, h in read)

    verified = run_cli(["state", "verify", "--json"], env_for(settings))
    assert verified.returncode == 0, verified.stderr
    summary = json.loads(verified.stdout.splitlines()[-1])
    assert summary == {
        "record": "summary",
        "topic_records": 5,
        "topic_tags": 1,
        "live_tags": 1,
        "differences": {"missing": 0, "extra": 0, "differing": 0},
    }

    # out of step: a tag brought back on the topic only, and the live one changed
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(state, json.dumps({"version": 9}).encode(), key=TAG.encode())
        await producer.send_and_wait(state, b'{"version": 7}', key=OTHER.encode())
    finally:
        await producer.stop()
    verified = run_cli(["state", "verify", "--json"], env_for(settings))
    assert verified.returncode == 1, verified.stderr
    lines = [json.loads(line) for line in verified.stdout.splitlines()]
    differences = {d["ocitag_id"]: d for d in lines if d["record"] == "difference"}
    assert differences[TAG]["difference"] == "extra"
    assert differences[OTHER]["difference"] == "differing"
    assert differences[OTHER]["fields"]["version"] == {"topic": 7, "live": 1}
    assert differences[OTHER]["fields"]["artifact"] == {"topic": None, "live": HEX}


async def test_a_redelivered_change_republishes_the_tag_as_it_now_is(
    make_settings: Callable[..., Settings],
) -> None:
    """A duplicate of an applied move that arrives after a later change of its tag (the
    first delivery's offset committed long ago) must not put the old version last."""
    settings = make_settings(topic_partitions=1)
    first = build_event(TAG, HEX, actor="alice", event_id="e1", time=at(1))
    later = build_event(TAG, HEX2, actor="bob", event_id="e2", time=at(2))
    async with running_worker(settings) as worker:
        await worker.publish([structured(first, key=TAG.encode())])
        await worker.outcomes(1)
        await worker.publish([structured(later, key=TAG.encode())])
        await worker.outcomes(2)
        await worker.publish([structured(first, key=TAG.encode())])  # the duplicate
        outcomes = await worker.outcomes(3)
        assert outcomes[2].value == outcomes[0].value  # its outcome: the first, byte for byte
        records = await worker.collect(settings.topics.state_topic, 3)
    versions = [json.loads(r.value)["version"] for r in records]
    assert versions == [1, 2, 2]  # the duplicate: version 2 again, the same bytes
    assert records[2].value == records[1].value


async def test_an_empty_state_topic_setting_turns_it_off(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(topic_partitions=1, state_topic="")
    event = build_event(TAG, HEX, event_id="e1", time=at(1))
    async with running_worker(settings) as worker:
        await worker.publish([structured(event, key=TAG.encode())])
        await worker.outcomes(1)
    on = make_settings()
    assert await missing_topics(settings, [on.topics.state_topic]) == [on.topics.state_topic]
    verified = run_cli(["state", "verify"], env_for(settings))
    assert verified.returncode == 2
    assert "OCITAG_STATE_TOPIC is empty" in verified.stderr


async def test_backfill_puts_the_tags_from_before_the_topic_on_it_once(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """Tags that were live before the state topic existed (rows written straight to
    PostgreSQL here) are missing from it; ``state backfill`` produces exactly those, a
    second run produces none, and a later change of a backfilled tag stays last."""
    settings = make_settings(topic_partitions=2)
    before = [f"docker.io/old/app:t{i}" for i in range(30)]
    async with running_worker(settings) as worker:
        await worker.publish([structured(history()[5], key=OTHER.encode())])  # on the topic
        await worker.outcomes(1)
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "INSERT INTO ocitags (repository, tag, artifact, created_by, created_on,"
                " last_modified_by, last_modified_on, version, last_event_source,"
                " last_event_id) SELECT 'docker.io/old/app', 't' || g, $1, 'old', now(),"
                " 'old', now(), 3, 'old', g::text FROM generate_series(0, 29) g",
                HEX,
            )
        finally:
            await conn.close()

        def summary(*args: str) -> tuple[int, dict[str, Any]]:
            done = run_cli(["state", *args], env_for(settings))
            return done.returncode, json.loads(done.stdout.splitlines()[-1])

        code, verified = summary("verify", "--json")
        assert (code, verified["differences"]["missing"]) == (1, 30)
        assert summary("backfill") == (
            0,
            {"record": "summary", "topic_tags": 1, "live_tags": 31, "produced": 30},
        )
        assert summary("verify", "--json")[0] == 0
        assert summary("backfill")[1]["produced"] == 0  # nothing missing: nothing sent
        records = await worker.collect(settings.topics.state_topic, 31)
        assert sorted((r.key or b"").decode() for r in records) == sorted([OTHER, *before])
        assert {json.loads(r.value)["version"] for r in records if r.key != OTHER.encode()} == {3}
        # each carries its row's own event key (state repair orders by it), not a made-up one
        keys = {
            (r.key or b"").decode(): dict(r.headers) for r in records if r.key != OTHER.encode()
        }
        assert {k: (h["event-source"], h["event-id"]) for k, h in keys.items()} == {
            f"docker.io/old/app:t{g}": (b"old", str(g).encode()) for g in range(30)
        }
        moved = build_event(before[0], HEX2, actor="new", event_id="n1", time=at(9))
        await worker.publish([structured(moved, key=before[0].encode())])
        await worker.outcomes(2)
    assert summary("verify", "--json")[0] == 0  # the change (v4) is the tag's last record
