"""A separate applier process for the race test: applies its share of the events and
writes (event id, outcome hex, replay) as JSON."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

import asyncpg

from tests.helpers.store import CTX, items, now, race_events
from worker.store import Store


async def main(url: str, seed: int, tags: int, per_tag: int, n: int, out: Path) -> None:
    events = race_events(seed, tags, per_tag)
    mine = random.Random(n).sample(events, k=len(events) * 3 // 4)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    result = []
    try:
        for start in range(0, len(mine), 20):
            batch = mine[start : start + 20]
            for e, o in zip(batch, await Store(pool, CTX).apply(items(batch), now()), strict=True):
                result.append((e.id, o.value.hex(), o.replay))
    finally:
        await pool.close()
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    url, seed, tags, per_tag, n, out = sys.argv[1:]
    asyncio.run(main(url, int(seed), int(tags), int(per_tag), int(n), Path(out)))
