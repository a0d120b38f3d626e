"""``ocitag-worker audit``: are the versions the outcome topic announced in the store?

After a PostgreSQL failover to an asynchronous standby (docs/replicated.md), the last
transactions the primary acknowledged may be gone while their outcomes are published and
their offsets committed: nothing redelivers them. The outcome topic remembers them. This
reads it from the beginning to its end and compares each tag's 200 outcomes with the
store's row:

- **lost**: the last version an outcome announced is above the row's version (or the row
  is gone): an acknowledged write is missing;
- **reused**: two outcomes of different events announced one version of one tag: after
  the loss, the next event was given a version already used.

A redelivered event's repeated outcome (same outcome ``id``) counts once. Outcomes that
the topic's retention already dropped cannot be compared: run it soon after a failover.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from worker.db import classify_db_error
from worker.errors import FatalError
from worker.kafka import client_options, require_topics, start_whole
from worker.settings import Settings


@dataclass
class Announced:
    """One tag's 200 outcomes, first delivery of each, in topic order."""

    versions: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # the causing events' ids


@dataclass(frozen=True)
class Finding:
    kind: str  # "lost" or "reused"
    ocitag_id: str
    announced: int  # the highest (lost) or repeated (reused) version
    stored: int | None  # the row's version; None: no row

    def as_dict(self) -> dict[str, Any]:
        return {
            "finding": self.kind,
            "ocitag_id": self.ocitag_id,
            "announced_version": self.announced,
            "stored_version": self.stored,
        }


def announced(outcomes: Iterable[bytes]) -> dict[str, Announced]:
    """The 200 outcomes per tag (``repository:tag`` of their record), each outcome ``id``
    once. Pure."""
    seen: set[str] = set()
    tags: dict[str, Announced] = {}
    for value in outcomes:
        body = json.loads(value)
        if body.get("status") != 200 or body.get("id") in seen:
            continue
        seen.add(body["id"])
        data = body.get("data") or {}
        tag = tags.setdefault(f"{data.get('repository')}:{data.get('tag')}", Announced())
        tag.versions.append(int(body["resourceversion"]))
        tag.events.append(str(body.get("causationid")))
    return tags


def findings(tags: Mapping[str, Announced], stored: Mapping[str, int]) -> list[Finding]:
    """What the store lacks of what was announced. Pure."""
    found: list[Finding] = []
    for ocitag_id, tag in sorted(tags.items()):
        row = stored.get(ocitag_id)
        if row is None or row < max(tag.versions):
            found.append(Finding("lost", ocitag_id, max(tag.versions), row))
        repeated = sorted({v for v in tag.versions if tag.versions.count(v) > 1})
        found.extend(Finding("reused", ocitag_id, v, row) for v in repeated)
    return found


async def read_outcomes(settings: Settings) -> list[bytes]:
    """The outcome topic from the beginning to its end offsets now."""
    await require_topics(settings, ["outcome_topic"])
    consumer = AIOKafkaConsumer(
        settings.topics.outcome_topic,
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await start_whole(consumer.start, consumer.stop)
        # without a group every partition is assigned, once the metadata has come
        for _ in range(300):  # at most 30 s
            if consumer.assignment():
                break
            await asyncio.sleep(0.1)
        partitions = sorted(consumer.assignment())
        if not partitions:
            raise FatalError(f"no partition of {settings.topics.outcome_topic} within 30 s")
        ends = await consumer.end_offsets(partitions)
        values: list[bytes] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            batch = await consumer.getmany(*partitions, timeout_ms=1000)
            values.extend(r.value for records in batch.values() for r in records if r.value)
        return values
    finally:
        await consumer.stop()


async def stored_versions(settings: Settings) -> dict[str, int]:
    """Every row's version, by ``repository:tag`` (tombstones included)."""
    try:
        conn = await asyncpg.connect(settings.database.dsn())
        try:
            rows = await conn.fetch("SELECT repository, tag, version FROM ocitags")
        finally:
            await conn.close()
    except (asyncpg.PostgresError, OSError) as exc:  # said as every command says it
        raise classify_db_error(exc, "audit") from exc
    return {f"{r['repository']}:{r['tag']}": int(r["version"]) for r in rows}


async def audit(settings: Settings) -> list[Finding]:
    """Compare the outcome topic with the store (the topic first: an outcome published
    meanwhile has its row already)."""
    outcomes = await read_outcomes(settings)
    return findings(announced(outcomes), await stored_versions(settings))
