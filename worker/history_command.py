"""``ocitag-worker history <OCITag ID>``: a tag's history, newest first — a table on a
terminal, JSON lines (the api's entries) when piped. Reads PostgreSQL directly, as the
api does (worker/api/history_reads.py)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import orjson

from worker.history_reads import NEWEST, PgHistoryReads
from worker.identifiers import normalize_ocitag_id
from worker.settings import Settings
from worker.startup import create_pool
from worker.timefmt import parse_rfc3339

COLUMNS = ("version", "change", "artifact", "by", "at", "event", "repointed")
_PAGE = 500


def row(entry: dict[str, Any]) -> tuple[str, ...]:
    """An entry's cells for the table (the artifact shortened as registries show it)."""
    artifact = entry["artifact"]
    short = artifact if len(artifact) <= 19 else artifact[:19] + "…"
    event = f"{entry['event']['source']} {entry['event']['id']}"
    return (
        str(entry["version"]),
        entry["change"],
        short,
        entry["by"],
        entry["at"],
        event,
        "REPOINTED" if entry["repointed"] else "",
    )


def table(entries: list[dict[str, Any]]) -> str:
    rows = [COLUMNS, *(row(e) for e in entries)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in rows
    )


async def history(
    settings: Settings,
    raw_ocitag: str,
    *,
    limit: int | None,
    out: TextIO = sys.stdout,
    as_json: bool | None = None,
) -> int:
    """Print the entries (all, or the newest ``limit``); exit 0, or 3 for a tag with no
    history. A bad OCITag ID raises ValueError (usage)."""
    ocitag = normalize_ocitag_id(raw_ocitag)
    readable = out.isatty() if as_json is None else not as_json
    pool = await create_pool(
        settings, "history", give_up_after=settings.lifecycle.startup_timeout_seconds
    )
    entries: list[dict[str, Any]] = []
    try:
        reads = PgHistoryReads(pool)
        before = NEWEST
        while limit is None or len(entries) < limit:
            want = _PAGE if limit is None else min(_PAGE, limit - len(entries))
            page = await reads.entries(ocitag, before, want)
            entries += page
            if len(page) < want:
                break
            before = (parse_rfc3339(page[-1]["at"]), page[-1]["version"])
    finally:
        await pool.close()
    if not entries:
        print(f"ocitag-worker: {ocitag} has no history (never seen)", file=sys.stderr)
        return 3
    if readable:
        print(table(entries), file=out)
    else:
        for entry in entries:
            out.write(orjson.dumps(entry).decode() + "\n")
    return 0
