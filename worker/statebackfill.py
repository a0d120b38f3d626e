"""``ocitag-worker state backfill``: put on the state topic the live record of every tag
it lacks. For a deployment that had tags before the state topic existed (docs/
upgrading.md): the worker produces a tag's record only when the tag changes, so the
tags nobody touched since would stay missing for ever (``state verify`` lists them).

What it produces: for every tag live in PostgreSQL whose key the topic, read to its end
offsets and folded, does not hold (never written, or its last record a tombstone), the
record the worker would produce for it now (worker/state.py ``upsert``). Safe while the
worker runs: each chunk's rows are read ``FOR SHARE`` and held until the chunk's records
are acknowledged, so a change of one of those tags waits, commits after, and its record
(newer) lands after the backfilled one — a compacted topic keeps the last record per
key, and it is never an older one. A tag the worker changed between the topic read and
the lock gets its current row, again at most a duplicate of what the worker produces (the
same key and value). Tags the topic holds with another value (``differing``) are left
alone: that is ``state verify``'s finding to look into, not a gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from aiokafka import AIOKafkaProducer

from worker.db import Connection, classify_db_error
from worker.decision import TagRecord
from worker.errors import Cause
from worker.kafka import new_producer, start_whole
from worker.retry import Backoff, retrying
from worker.settings import Settings
from worker.startup import create_pool
from worker.state import fold, upsert
from worker.statetopic import read_state_topic

#: tags per transaction (their rows stay share-locked until their records are acked)
CHUNK = 500

_LIVE_KEYS = "SELECT repository, tag FROM live_ocitags"
# the whole row (its event key goes into the record's headers: worker/state.py, read by
# ``state repair``), locked in key order; the worker's writes lock in their own order, so a
# deadlock stays possible and the chunk is then done again (``_chunk``)
_LOCK = """
SELECT repository, tag, artifact, created_by, created_on, last_modified_by, last_modified_on,
       version, last_event_source, last_event_id, deleted_on, deleted_by
FROM ocitags
WHERE deleted_on IS NULL
  AND (repository, tag) IN (SELECT * FROM unnest($1::text[], $2::text[]))
ORDER BY repository, tag
FOR SHARE
"""
#: attempts of one chunk that met a deadlock or a serialization failure (the worker's
#: writes take the same rows' locks): it is idempotent, so it is simply done again
CHUNK_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Backfilled:
    topic_tags: int  # held by the topic before
    live_tags: int
    produced: int

    def summary(self) -> dict[str, int | str]:
        return {
            "record": "summary",
            "topic_tags": self.topic_tags,
            "live_tags": self.live_tags,
            "produced": self.produced,
        }


def missing(topic_keys: set[str], live: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The live (repository, tag) pairs whose OCITag ID the topic does not hold, sorted."""
    return sorted(pair for pair in live if f"{pair[0]}:{pair[1]}" not in topic_keys)


async def backfill(settings: Settings) -> Backfilled:
    topic = settings.topics.state_topic
    if not topic:
        raise ValueError("OCITAG_STATE_TOPIC is empty (the state topic is off): nothing to fill")
    held = set(fold((key, value) for key, value, _ in await read_state_topic(settings)))
    pool = await create_pool(
        settings, "state backfill", give_up_after=settings.lifecycle.startup_timeout_seconds
    )
    producer = new_producer(settings)
    produced = 0
    try:
        await start_whole(producer.start, producer.stop)
        async with pool.acquire() as conn:
            live = [(r["repository"], r["tag"]) for r in await conn.fetch(_LIVE_KEYS)]
            todo = missing(held, live)
            for at in range(0, len(todo), CHUNK):
                pairs = todo[at : at + CHUNK]
                produced += await retrying(
                    partial(_chunk, conn, producer, topic, pairs),
                    Backoff(0.01, 0.5),
                    classify=lambda exc: classify_db_error(exc, "state backfill"),
                    causes={Cause.DB_CONFLICT},
                    attempts=CHUNK_ATTEMPTS,
                )
    finally:
        await producer.stop()
        await pool.close()
    return Backfilled(len(held), len(live), produced)


async def _chunk(
    conn: Connection,
    producer: AIOKafkaProducer,
    topic: str,
    pairs: list[tuple[str, str]],
) -> int:
    """One chunk: lock the rows, send their records, wait for every acknowledgement,
    then let the locks go."""
    async with conn.transaction():
        rows = await conn.fetch(_LOCK, [p[0] for p in pairs], [p[1] for p in pairs])
        records = [upsert(TagRecord(**dict(row))) for row in rows]
        batch = [await producer.send(topic, r.value, key=r.key, headers=r.headers) for r in records]
        for delivery in batch:
            await delivery
    return len(records)
