"""``ocitag-worker state verify``: does the state topic, read from the beginning to its
end offsets and folded by key, hold exactly ``live_ocitags``? Prints each difference
(missing, extra, differing with the fields) and a summary; exit 1 if any.

Run it while the worker is idle: a change applied between the two reads shows as a
difference (run it again). On a terminal, readable lines; piped, JSON lines
(``{"record": "difference", …}``, one ``{"record": "summary", …}``), as ``reconcile``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

import asyncpg
import orjson

from worker.decision import TagRecord
from worker.settings import Settings
from worker.startup import create_pool
from worker.state import Difference, differences, fold, state_value
from worker.statetopic import read_state_topic

_LIVE = """
SELECT repository, tag, artifact, created_by, created_on, last_modified_by, last_modified_on,
       version
FROM live_ocitags
"""


@dataclass(frozen=True, slots=True)
class Verified:
    records: int  # read from the topic
    topic_tags: int  # after the fold
    live_tags: int
    differences: list[Difference]

    def summary(self) -> dict[str, Any]:
        kinds = {"missing": 0, "extra": 0, "differing": 0}
        for difference in self.differences:
            kinds[difference.kind] += 1
        return {
            "record": "summary",
            "topic_records": self.records,
            "topic_tags": self.topic_tags,
            "live_tags": self.live_tags,
            "differences": kinds,
        }


def live_map(rows: list[asyncpg.Record]) -> dict[str, dict[str, Any]]:
    """``live_ocitags`` as the state topic shows it (worker/state.py ``state_value``);
    the view has no last event, which the value does not show."""
    live = {}
    for row in rows:
        record = TagRecord(**dict(row), last_event_source="", last_event_id="")
        live[f"{record.repository}:{record.tag}"] = state_value(record)
    return live


async def verify(settings: Settings) -> Verified:
    """Read the topic to its end offsets, then ``live_ocitags``, and compare."""
    if not settings.topics.state_topic:
        raise ValueError("OCITAG_STATE_TOPIC is empty (the state topic is off): nothing to verify")
    records = await read_state_topic(settings)
    pool = await create_pool(
        settings, "state verify", give_up_after=settings.lifecycle.startup_timeout_seconds
    )
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch(_LIVE)
    finally:
        await pool.close()
    topic = fold((key, value) for key, value, _ in records)
    live = live_map(rows)
    return Verified(len(records), len(topic), len(live), differences(topic, live))


def print_verified(verified: Verified, as_json: bool | None, stream: TextIO | None = None) -> None:
    """JSON lines when asked or when ``stream`` is not a terminal; else readable lines."""
    out = stream or sys.stdout
    if as_json or (as_json is None and not out.isatty()):
        for difference in verified.differences:
            out.write(orjson.dumps({"record": "difference", **difference.as_json()}).decode())
            out.write("\n")
        out.write(orjson.dumps(verified.summary()).decode() + "\n")
        out.flush()
        return
    for difference in verified.differences:
        out.write(f"{difference.kind:<9} {difference.ocitag_id}\n")
        for name, (topic, live) in difference.fields.items():
            out.write(f"          {name}: topic {topic!r}, live {live!r}\n")
    summary = verified.summary()
    counts = ", ".join(f"{count} {kind}" for kind, count in summary["differences"].items())
    verdict = "in step" if not verified.differences else f"differences: {counts}"
    out.write(
        f"state topic {verified.records} records, {verified.topic_tags} tags; live "
        f"{verified.live_tags} tags: {verdict}\n"
    )
    out.flush()
