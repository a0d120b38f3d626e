"""Helpers shared by the integration tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tests.model import Summary
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
