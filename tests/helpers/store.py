"""Store-level helpers: batches of items as the pipeline hands them to the store,
outcome summaries and rows to compare with the reference model, and events for the race
tests."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.helpers.model import Model, Summary
from tests.helpers.strategies import BASE, digest, make_deletion, make_event
from worker.events import Invalid, RawRecord, TagEvent
from worker.outcomes import Outcome, OutcomeContext
from worker.plan import Item

CTX = OutcomeContext("urn:ocitag-worker:test", "https://ocitag-worker.dev/problems/")


def items(events: Sequence[TagEvent | Invalid], first_offset: int = 0) -> list[Item]:
    return [
        Item(RawRecord("ocitag.events", 0, first_offset + n, 0, None, b"", ()), e)
        for n, e in enumerate(events)
    ]


def summary(outcome: Outcome | bytes) -> Summary:
    body: dict[str, Any] = json.loads(outcome.value if isinstance(outcome, Outcome) else outcome)
    if body["status"] == 200:
        return Summary(200, body["change"], body["resourceversion"], body["data"]["artifact"])
    reason = body["data"]["type"].rsplit("/", 1)[-1]
    return Summary(body["status"], reason=reason if body["status"] in (404, 409) else None)


def now() -> datetime:
    return datetime.now(UTC)


def race_events(seed: int, tags: int, per_tag: int) -> list[TagEvent]:
    """Events for the race tests: ``per_tag`` events on each of ``tags`` tags, about one
    in five a deletion, a few digests and actors, times within 10 s, so that orders and
    batches matter."""
    rng = random.Random(seed)
    events: list[TagEvent] = []
    for t in range(tags):
        for n in range(per_tag):
            when = BASE + timedelta(milliseconds=rng.randrange(10_000))
            actor = f"a{rng.randrange(3)}"
            if rng.randrange(5) == 0:
                events.append(make_deletion(f"race{t}", when, event_id=f"r{t}-{n}", actor=actor))
            else:
                events.append(
                    make_event(
                        f"race{t}",
                        digest(rng.randrange(5)),
                        when,
                        event_id=f"r{t}-{n}",
                        actor=actor,
                    )
                )
    return events


RowState = tuple[str | None, str, object, int, object, str | None, str | None, object]


async def rows(pool: asyncpg.Pool) -> dict[str, RowState]:
    """Every row, tombstones included: (artifact, last_modified_by, last_modified_on,
    version, deleted_on, deleted_by, created_by, created_on)."""
    found = await pool.fetch(
        "SELECT tag, artifact, last_modified_by, last_modified_on, version, deleted_on, "
        "deleted_by, created_by, created_on FROM ocitags"
    )
    return {
        r["tag"]: (
            r["artifact"],
            r["last_modified_by"],
            r["last_modified_on"],
            r["version"],
            r["deleted_on"],
            r["deleted_by"],
            r["created_by"],
            r["created_on"],
        )
        for r in found
    }


def model_rows(model: Model) -> dict[str, RowState]:
    return {
        tag: (
            r.artifact,
            r.last_modified_by,
            r.last_modified_on,
            r.version,
            r.deleted_on,
            r.deleted_by,
            r.created_by,
            r.created_on,
        )
        for (_, tag), r in model.rows.items()
    }
