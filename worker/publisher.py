"""``ocitag-worker publish``: tag events (moved, or deleted with ``--delete``) from
arguments or a JSON/NDJSON file, as CloudEvents in either Kafka content mode. A
producer-side tool: it checks nothing the worker checks, so it can also send bad events
on purpose."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from worker.decode import STRUCTURED
from worker.errors import FatalError
from worker.identifiers import InvalidIdentifierError, normalize_ocitag_id, split_ocitag_id
from worker.kafka import client_options, missing_topics
from worker.models import DELETED_EVENT_TYPE, EVENT_TYPE
from worker.settings import Settings
from worker.timefmt import format_rfc3339

Mode = Literal["structured", "binary"]
DEFAULT_SOURCE = "urn:ocitag-worker:cli"


def build_event(
    ocitag_id: str,
    artifact: str | None,
    *,
    actor: str | None = None,
    previous_artifact: str | None = None,
    expected_version: int | None = None,
    source: str = DEFAULT_SOURCE,
    event_id: str | None = None,
    time: str | None = None,
) -> dict[str, Any]:
    """A tag event as a structured CloudEvent (a dict): ``ocitag.moved.v1`` to
    ``artifact``, or ``ocitag.deleted.v1`` when ``artifact`` is None. The one builder of
    input events: the CLI, ingest, reconcile and the api all publish through it."""
    repository, tag = split_ocitag_id(ocitag_id)
    data: dict[str, Any] = {"repository": repository, "tag": tag}
    if artifact is not None:
        data["artifact"] = artifact
    if actor is not None:
        data["actor"] = actor
    if previous_artifact is not None:
        data["previous_artifact"] = previous_artifact
    if expected_version is not None:
        data["expected_version"] = expected_version
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": EVENT_TYPE if artifact is not None else DELETED_EVENT_TYPE,
        "time": time or format_rfc3339(datetime.now(UTC)),
        "subject": ocitag_id,
        "datacontenttype": "application/json",
        "data": data,
    }


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


def to_record(
    event: dict[str, Any], mode: Mode
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of one event in the chosen content mode."""
    key = _key(event)
    if mode == "structured":
        value = json.dumps(event, ensure_ascii=False).encode()
        return key, value, [("content-type", STRUCTURED.encode())]
    headers = [
        (f"ce_{name}", str(value).encode())
        for name, value in event.items()
        if name not in ("data", "datacontenttype")
    ]
    headers.append(("content-type", str(event.get("datacontenttype", "application/json")).encode()))
    return key, json.dumps(event.get("data"), ensure_ascii=False).encode(), headers


def _key(event: dict[str, Any]) -> bytes | None:
    data = event.get("data")
    if isinstance(data, dict):
        try:
            return normalize_ocitag_id(f"{data.get('repository')}:{data.get('tag')}").encode()
        except (InvalidIdentifierError, TypeError):
            pass
    subject = event.get("subject")
    return subject.encode() if isinstance(subject, str) else None


async def publish(
    settings: Settings, events: list[dict[str, Any]], mode: Mode
) -> list[tuple[str, int, int]]:
    """Send the events, wait for every acknowledgement; (id, partition, offset) each."""
    if await missing_topics(settings, [settings.topics.input_topic]):
        raise FatalError(
            f"topic {settings.topics.input_topic} does not exist: start the worker (it creates its "
            "topics) or create it, or set OCITAG_INPUT_TOPIC"
        )
    producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
    try:
        await producer.start()
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
