"""The state topic from a subscriber's side (docs/subscribers.md): the example subscriber
run as a person would run it, ``live_ocitags`` in the form the topic shows, and the
topic's size before and after the log cleaner."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.helpers.services import REPO
from worker.timefmt import format_rfc3339

EXAMPLE = REPO / "examples" / "state_subscriber.py"


def run_example_subscriber(bootstrap: str, topic: str) -> dict[str, Any]:
    """``python examples/state_subscriber.py --until-caught-up``: its map."""
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--until-caught-up",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found: dict[str, Any] = json.loads(done.stdout)
    return found


async def live_ocitags(database_url: str) -> dict[str, dict[str, Any]]:
    """Every row of ``live_ocitags``, keyed by OCITag ID, with the view's columns (times
    in RFC 3339, as the seed's OCITag has them)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM live_ocitags")
    finally:
        await conn.close()
    return {
        f"{r['repository']}:{r['tag']}": {
            name: format_rfc3339(value) if name.endswith("_on") else value
            for name, value in dict(r).items()
        }
        for r in rows
    }


async def record_counts(bootstrap: str, topic: str) -> tuple[int, int]:
    """(records written ever: the sum of the end offsets, records still there: read from
    the beginning to those ends). The second is smaller once the cleaner compacted."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    assert partitions, f"no topic {topic}"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        kept = 0
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=500)
                kept += sum(1 for r in batch.get(tp, []) if r.offset < ends[tp])
        return sum(ends.values()), kept
    finally:
        await consumer.stop()


async def alter_topic(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    finally:
        await admin.close()
