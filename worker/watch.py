"""``ocitag-worker outcomes``: print outcomes as they arrive, readable on a terminal and
as JSON lines (the outcome CloudEvents themselves) when piped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any, TextIO

import structlog
from aiokafka import AIOKafkaConsumer

from worker.kafka import client_options, require_topics, start_whole
from worker.settings import Settings

log = structlog.get_logger("worker.watch")


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
    stop: asyncio.Event | None = None,
) -> int:
    """Print outcomes until ``count`` were printed, none came for ``idle_timeout``
    seconds, or ``stop`` is set (forever if none of these). Says on the log (stderr) when
    it is following, so that a person knows when to send. Returns how many it printed."""
    readable = out.isatty() if as_json is None else not as_json
    stop = stop or asyncio.Event()
    await require_topics(settings, ["outcome_topic"])
    consumer = AIOKafkaConsumer(
        settings.topics.outcome_topic,
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    printed = 0
    try:
        await start_whole(consumer.start, consumer.stop)
        # where each partition starts, resolved now: what is sent after this line shows
        for partition in consumer.assignment():
            await consumer.position(partition)
        log.info(
            "following",
            topic=settings.topics.outcome_topic,
            start="beginning" if from_beginning else "end",
            partitions=len(consumer.assignment()),
        )
        while count is None or printed < count:
            record = await _next(consumer, stop, idle_timeout)
            if record is None:
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


async def _next(consumer: AIOKafkaConsumer, stop: asyncio.Event, idle_timeout: float | None) -> Any:
    """The next record, or None once ``stop`` is set or ``idle_timeout`` passed."""
    getting = asyncio.ensure_future(consumer.getone())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {getting, stopping}, timeout=idle_timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (getting, stopping):
            if not task.done():
                task.cancel()
        await asyncio.gather(getting, stopping, return_exceptions=True)
    return getting.result() if getting in done else None
