"""Store-level helpers: batches of items as the pipeline hands them to the store,
outcome summaries to compare with the reference model, and events for the race tests."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.helpers.model import Summary
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
