"""``ocitag-worker outcomes``: print outcomes as they arrive, readable on a terminal and
as JSON lines (the outcome CloudEvents themselves) when piped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer

from worker.errors import FatalError
from worker.kafka import client_options, missing_topics
from worker.settings import Settings


def describe(outcome: dict[str, Any]) -> str:
    """One readable line for a person."""
    status = outcome.get("status")
    subject = outcome.get("subject")
    data = outcome.get("data") or {}
    if status == 200 and outcome.get("change") == "deleted":
        return (
            # data is the record as it was: the deleter is not in it, the input's source is
            f"{status} deleted {subject} (was {data.get('artifact')}) "
            f"v{outcome.get('resourceversion')} "
            f"(event {outcome.get('causationid')} from {outcome.get('causationsource')})"
        )
    if status == 200:
        return (
            f"{status} {outcome.get('change')} {subject} -> {data.get('artifact')} "
            f"v{outcome.get('resourceversion')} by {data.get('last_modified_by')} "
            f"(event {outcome.get('causationid')})"
        )
    kind = str(data.get("type", "")).rsplit("/", 1)[-1]
    # A record that is not a readable event has no subject or event id: name only what
    # is known, and the record itself (its problem's instance) when there is no event id.
    about = f" {outcome['subject']}" if outcome.get("subject") else ""
    causation = outcome.get("causationid")
    origin = f"event {causation}" if causation else f"record {data.get('instance')}"
    lines = [f"{status} {kind}{about}: {data.get('detail')} ({origin})"]
    lines += [f"    {e.get('location')}: {e.get('message')}" for e in data.get("errors") or []]
    return "\n".join(lines)


async def watch(
    settings: Settings,
    *,
    from_beginning: bool,
    count: int | None,
    idle_timeout: float | None,
    out: TextIO = sys.stdout,
    as_json: bool | None = None,
) -> int:
    """Print outcomes until ``count`` were printed or none came for ``idle_timeout``
    seconds (forever if neither). Returns how many were printed."""
    readable = out.isatty() if as_json is None else not as_json
    if await missing_topics(settings, [settings.topics.outcome_topic]):
        raise FatalError(
            f"topic {settings.topics.outcome_topic} does not exist: start the worker (it creates "
            "its topics) or create it, or set OCITAG_OUTCOME_TOPIC"
        )
    consumer = AIOKafkaConsumer(
        settings.topics.outcome_topic,
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    printed = 0
    try:
        await consumer.start()
        while count is None or printed < count:
            try:
                record = await asyncio.wait_for(consumer.getone(), timeout=idle_timeout)
            except TimeoutError:
                break
            text = record.value.decode("utf-8", "replace")
            if readable:
                with contextlib.suppress(ValueError, AttributeError):
                    text = describe(json.loads(text))
            print(text, file=out, flush=True)
            printed += 1
    finally:
        await consumer.stop()
    return printed
