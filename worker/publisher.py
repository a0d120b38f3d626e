"""``ocitag-worker publish``: tag events (moved, or deleted with ``--delete``) from
arguments or a JSON/NDJSON file, as CloudEvents in either Kafka content mode. A
producer-side tool: it checks nothing the worker checks, so it can also send bad events
on purpose. The events are built and encoded by ``worker.encode``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from worker.encode import Mode, build_event, to_record
from worker.kafka import client_options, require_topics, start_whole
from worker.settings import Settings


def event_from_item(item: Any, source: str) -> dict[str, Any]:
    """A file item is a whole CloudEvent (it has ``specversion``) or its ``data``."""
    if isinstance(item, dict) and "specversion" in item:
        return item
    if isinstance(item, dict) and {"repository", "tag", "artifact"} <= item.keys():
        event = build_event(f"{item['repository']}:{item['tag']}", item["artifact"], source=source)
        event["data"] = item
        return event
    raise ValueError(
        "each item must be a CloudEvent (with specversion) or tag-moved data (repository, "
        "tag, artifact)"
    )


def read_items(path: Path) -> Iterator[Any]:
    """A JSON array, a single JSON object, or NDJSON (one value per line)."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from json.loads(text)
        return
    try:
        yield json.loads(text)
        return
    except json.JSONDecodeError:
        pass
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from None


async def publish(
    settings: Settings, events: list[dict[str, Any]], mode: Mode
) -> list[tuple[str, int, int]]:
    """Send the events, wait for every acknowledgement; (id, partition, offset) each."""
    await require_topics(settings, ["input_topic"])
    producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
    try:
        await start_whole(producer.start, producer.stop)
        futures = []
        for event in events:
            key, value, headers = to_record(event, mode)
            futures.append(
                await producer.send(settings.topics.input_topic, value, key=key, headers=headers)
            )
        results = []
        for event, future in zip(events, futures, strict=True):
            meta = await future
            results.append((str(event.get("id")), meta.partition, meta.offset))
        return results
    finally:
        await producer.stop()
