"""``make bench-history-bytes``: what tag history (docs/history.md) costs on disk, per
relation, per applied change, without a broker: the events of bench/store.py's generator
(uniform tags, N/4 distinct, a random artifact each) applied by the real Store
(worker/store.py) in batches, in random tag order like the worker's, on a fresh database.

Every history relation and index, its partitions summed (bench/tag_history.py
``history_bytes``), divided by the entries written: the history-on minus history-off
difference of the database, measured directly (nothing else is written for history).
The drain's own figure (bench/tag_history.py) agrees within its noise; this one is
exact and needs no Kafka, so that each storage variant can be measured alike (run it
against another checkout with ``PYTHONPATH=<checkout>`` to measure that one's layout).

Knobs: BENCH_HISTORY_BYTES_EVENTS (100000), BENCH_HISTORY_BYTES_BATCH (500),
BENCH_HISTORY_UUID_IDS=1 (event ids in the UUID form, as most CloudEvents producers
make them, instead of the generator's ``<prefix>-<n>``), BENCH_SEED.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from bench.report import table
from bench.services import (
    code_version,
    create_database,
    discover,
    drop_databases,
    env_int,
    machine,
    unique,
    write_results,
)
from bench.store import make_items
from bench.tag_history import history_bytes
from worker.db import open_pool
from worker.outcomes import OutcomeContext
from worker.plan import Item
from worker.store import Store

_NAMESPACE = uuid.UUID("6f1c2a52-1f0e-4a44-9d7c-3c1b8f7e0a11")


def with_uuid_ids(items: list[Item]) -> list[Item]:
    return [
        Item(i.record, replace(i.event, id=str(uuid.uuid5(_NAMESPACE, i.event.id)))) for i in items
    ]


async def run() -> dict[str, Any]:
    events = env_int("BENCH_HISTORY_BYTES_EVENTS", 100_000)
    batch = env_int("BENCH_HISTORY_BYTES_BATCH", 500)
    uuids = os.environ.get("BENCH_HISTORY_UUID_IDS") == "1"
    items = make_items(events, max(1, events // 4), "hb-", env_int("BENCH_SEED", 1))
    if uuids:
        items = with_uuid_ids(items)
    services = discover()
    name = unique("histbytes")
    url = await create_database(services.database_url, name)
    ctx = OutcomeContext("urn:ocitag-worker:bench", "https://ocitag-worker.dev/problems/")
    try:
        pool = await open_pool(url, 1, 2, 60, 15)
        try:
            store = Store(pool, ctx)
            for start in range(0, len(items), batch):
                await store.apply(items[start : start + batch], datetime.now(UTC))
        finally:
            await pool.close()
        measured = await history_bytes(url)
    finally:
        await drop_databases(services.database_url, [name])
    entries = measured["entries"]
    per_change = {k: round(v / max(entries, 1), 1) for k, v in measured["relations"].items()}
    return {
        "events": events,
        "batch": batch,
        "uuid_event_ids": uuids,
        "entries": entries,
        "relations": measured["relations"],
        "bytes_per_change": per_change,
        "total_bytes_per_change": round(sum(measured["relations"].values()) / max(entries, 1), 1),
        "code": code_version(),
        "machine": machine(),
    }


def render(results: dict[str, Any]) -> str:
    rows = sorted(results["bytes_per_change"].items())
    rows.append(("total", results["total_bytes_per_change"]))
    ids = "UUID" if results["uuid_event_ids"] else "generator's"
    return "\n".join(
        [
            f"history bytes, {results['entries']:,} entries ({ids} event ids):",
            table(["relation", "B/change"], rows),
        ]
    )


def main() -> None:
    results = asyncio.run(run())
    path = write_results("history-bytes", results)
    print(render(results))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
