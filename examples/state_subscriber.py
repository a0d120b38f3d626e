"""A subscriber of ocitag-worker's state topic: keeps a local map of every live tag.

    python examples/state_subscriber.py --bootstrap localhost:9092 --topic ocitag.state

reads the compacted topic from the beginning, keeps the last record of every tag (a
null value, a tombstone, removes it), says when it has caught up, and then follows the
changes as they come. ``--until-caught-up`` prints the map as JSON and stops there
instead. Needs aiokafka (``pip install aiokafka``); any Kafka client would do.

The rules a subscriber needs (docs/subscribers.md):
- key = the OCITag ID; value = the record as JSON with its "version", or null;
- a record may come twice (at-least-once): a version not greater than the one held for
  that tag (the ``version`` header, on tombstones too) changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


class TagMap:
    """The current record of every live tag, by OCITag ID."""

    def __init__(self) -> None:
        self.tags: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}  # the last version seen, deletions included

    def apply(self, key: bytes, value: bytes | None, headers: dict[str, bytes]) -> str | None:
        """Apply one record; returns what happened ("upsert", "delete") or None."""
        tag = key.decode()
        version = int(headers["version"]) if "version" in headers else None
        if version is not None and version <= self.versions.get(tag, 0):
            return None  # a duplicate, or older than what we hold
        if version is not None:
            self.versions[tag] = version
        if value is None:
            self.tags.pop(tag, None)
            # forget the version too: a tag re-created after its tombstone was pruned in
            # the store (30 days) starts again at version 1
            self.versions.pop(tag, None)
            return "delete"
        self.tags[tag] = json.loads(value)
        return "upsert"


async def subscribe(bootstrap: str, topic: str, until_caught_up: bool) -> TagMap:
    # no consumer group: every partition, from the beginning, each time it starts
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    tags = TagMap()
    ends: dict[TopicPartition, int] | None = None  # caught up once past these offsets
    following = False
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    headers = dict(record.headers)
                    what = tags.apply(record.key, record.value, headers)
                    if what and following:
                        version = headers.get("version", b"?").decode()
                        print(f"{what} {record.key.decode()} v{version}", flush=True)
            if ends is None and consumer.assignment():
                ends = await consumer.end_offsets(list(consumer.assignment()))
            if ends is not None and not following and await caught_up(consumer, ends):
                if until_caught_up:
                    return tags
                following = True
                print(f"caught up: {len(tags.tags)} live tags", file=sys.stderr)
    finally:
        await consumer.stop()


async def caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="localhost:9092", help="Kafka host:port")
    parser.add_argument("--topic", default="ocitag.state", help="the state topic")
    parser.add_argument(
        "--until-caught-up", action="store_true", help="print the map as JSON and stop"
    )
    args = parser.parse_args()
    try:
        tags = asyncio.run(subscribe(args.bootstrap, args.topic, args.until_caught_up))
    except KeyboardInterrupt:
        return
    print(json.dumps(tags.tags, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
