"""What a run prints: JSON lines when piped, lines and a summary table on a terminal."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from rich.console import Console

from worker.reconcile.diff import Difference
from worker.reconcile.output import JsonLines, Summary, Terminal, choose

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MOVED = Difference("moved", "r.example/team/app", "v1", "b" * 64, "a" * 64, AT)
DELETED = Difference("deleted", "r.example/team/app", "old", None, "a" * 64, AT)
SUMMARY = Summary(
    run_id="run-1",
    host="r.example",
    started=AT,
    dry_run=False,
    repositories=2,
    tags=40,
    duration_seconds=1.25,
    differences={"moved": 1, "deleted": 1},
    agreed=38,
    failed_repositories=("r.example/locked",),
    published=2,
)


def test_json_lines() -> None:
    out = io.StringIO()
    output = JsonLines(out)
    output.difference(MOVED, "id-1")
    output.difference(DELETED, None)
    output.summary(SUMMARY)
    first, second, summary = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {
        "record": "difference",
        "kind": "moved",
        "ocitag_id": "r.example/team/app:v1",
        "artifact": "b" * 64,
        "stored_artifact": "a" * 64,
        "observed_at": "2026-12-01T12:00:00Z",
        "event_id": "id-1",
    }
    assert second["kind"] == "deleted" and second["event_id"] is None
    assert summary["differences"] == {"moved": 1, "deleted": 1}
    assert summary["tags_scanned"] == 40
    assert summary["events_published"] == 2
    assert summary["failed_repositories"] == ["r.example/locked"]
    assert summary["duration_seconds"] == 1.25


def test_terminal_lines_and_summary() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120, record=True)
    output = Terminal(console)
    output.listed(2)
    output.resolved(2)
    output.difference(MOVED, "id-1")
    output.difference(DELETED, None)
    output.summary(SUMMARY)
    text = console.export_text()
    assert "moved    r.example/team/app:v1  aaaaaaaaaaaa → bbbbbbbbbbbb  published" in text
    assert "deleted  r.example/team/app:old  aaaaaaaaaaaa → (tag gone)  would publish" in text
    for figure in ("tags scanned", "40", "differences: moved", "events published", "1.25 s"):
        assert figure in text
    assert "r.example/locked" in text


def test_choose_by_terminal() -> None:
    assert isinstance(choose(None, io.StringIO()), JsonLines)
    assert isinstance(choose(True, io.StringIO()), JsonLines)
