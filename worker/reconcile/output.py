"""What a reconcile run prints: each difference, then a summary.

On a terminal: a progress bar while tags are resolved, one line per difference and a
summary table, drawn by rich (well kept, and one library for the live progress bar, the
lines printed above it and the table; tqdm would draw the bar only). Piped: JSON lines
on stdout, ``{"record": "difference", …}`` per difference and one
``{"record": "summary", …}`` per run, for scripts and log pipelines.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TextIO

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worker.reconcile.diff import Difference
from worker.timefmt import format_rfc3339


@dataclass(frozen=True)
class Summary:
    """The figures of one run."""

    run_id: str
    host: str
    started: datetime
    dry_run: bool
    repositories: int
    tags: int
    duration_seconds: float
    differences: dict[str, int] = field(default_factory=dict)
    agreed: int = 0
    newer: int = 0
    skipped: int = 0
    failed_repositories: tuple[str, ...] = ()
    published: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "record": "summary",
            "run_id": self.run_id,
            "registry": self.host,
            "started": format_rfc3339(self.started),
            "dry_run": self.dry_run,
            "repositories_scanned": self.repositories,
            "tags_scanned": self.tags,
            "differences": {"moved": 0, "deleted": 0, **self.differences},
            "agreed": self.agreed,
            "newer_in_store": self.newer,
            "skipped": self.skipped,
            "failed_repositories": list(self.failed_repositories),
            "events_published": self.published,
            "duration_seconds": round(self.duration_seconds, 3),
        }


def difference_dict(difference: Difference, event_id: str | None) -> dict[str, Any]:
    return {
        "record": "difference",
        "kind": difference.kind,
        "ocitag_id": difference.ocitag_id,
        "artifact": difference.artifact,
        "stored_artifact": difference.stored,
        "observed_at": format_rfc3339(difference.observed_at),
        "event_id": event_id,  # None on a dry run: nothing was published
    }


class Output(Protocol):
    def listed(self, tags: int) -> None: ...

    def resolved(self, tags: int = 1) -> None: ...

    def difference(self, difference: Difference, event_id: str | None) -> None: ...

    def summary(self, summary: Summary) -> None: ...


class JsonLines:
    """One JSON object per line on ``stream`` (stdout)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def listed(self, tags: int) -> None:
        pass

    def resolved(self, tags: int = 1) -> None:
        pass

    def difference(self, difference: Difference, event_id: str | None) -> None:
        self._write(difference_dict(difference, event_id))

    def summary(self, summary: Summary) -> None:
        self._write(summary.as_dict())

    def _write(self, item: dict[str, Any]) -> None:
        self._stream.write(orjson.dumps(item).decode() + "\n")
        self._stream.flush()


class Terminal:
    """A progress bar (tags resolved of tags listed) and readable lines."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console()
        self._progress = Progress(
            TextColumn("resolving tags"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._console,
            transient=True,
        )
        self._task = self._progress.add_task("tags", total=0)
        self._started = False

    def listed(self, tags: int) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        self._progress.update(self._task, total=(self._total() or 0) + tags)

    def resolved(self, tags: int = 1) -> None:
        self._progress.advance(self._task, tags)

    def difference(self, difference: Difference, event_id: str | None) -> None:
        stored = _short(difference.stored) if difference.stored else "(no live record)"
        target = _short(difference.artifact) if difference.artifact else "(tag gone)"
        verb = "would publish" if event_id is None else "published"
        self._console.print(
            f"{difference.kind:<8} {difference.ocitag_id}  {stored} → {target}  [dim]{verb}[/dim]",
            highlight=False,
        )

    def summary(self, summary: Summary) -> None:
        if self._started:
            self._progress.stop()
            self._started = False
        figures = summary.as_dict()
        table = Table(
            title=f"reconcile {summary.host}", caption=f"run {summary.run_id}", show_header=False
        )
        table.add_row("repositories scanned", str(figures["repositories_scanned"]))
        table.add_row("tags scanned", str(figures["tags_scanned"]))
        for kind, count in figures["differences"].items():
            table.add_row(f"differences: {kind}", str(count))
        table.add_row("agreeing", str(summary.agreed))
        table.add_row("newer in the store (left alone)", str(summary.newer))
        if summary.skipped:
            table.add_row("skipped (invalid tag or digest)", str(summary.skipped))
        if summary.failed_repositories:
            table.add_row("repositories not read", ", ".join(summary.failed_repositories))
        published = "none (dry run)" if summary.dry_run else str(summary.published)
        table.add_row("events published", published)
        table.add_row("duration", f"{summary.duration_seconds:.2f} s")
        self._console.print(table)

    def _total(self) -> float | None:
        return next(t.total for t in self._progress.tasks if t.id == self._task)


def _short(digest: str) -> str:
    algorithm, _, hex_part = digest.rpartition(":")
    return f"{algorithm + ':' if algorithm else ''}{hex_part[:12]}"


def choose(as_json: bool | None, stream: TextIO | None = None) -> Output:
    """JSON lines when asked or when stdout is not a terminal; else the terminal view."""
    out = stream or sys.stdout
    if as_json or (as_json is None and not out.isatty()):
        return JsonLines(out)
    return Terminal(Console(file=out))
