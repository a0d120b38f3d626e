"""The logs of the processes a fault scenario ran (worker, ingest: ``<scenario>-<name>.log``
in the test's ``tmp_path``), shown when the scenario fails: a worker that stopped making
progress is diagnosed from its own lines, and a run on a loaded machine is rarely
repeated the same way.

A worker logs one canonical line per event (``"event": "event"``): tens of thousands in
a scenario, saying little about why it stopped. The excerpt keeps every other line (the
last ``keep`` of them: retries, outages, rebalances, producer restarts, stalls,
tracebacks, anything that is not JSON) and the last per-event line, which says where
the stream stopped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

#: the lines of each log a failure shows, besides the last per-event line
KEEP = 300


def _is_event_line(line: str) -> bool:
    if not line.startswith("{"):
        return False
    try:
        parsed = json.loads(line)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("event") == "event"


def log_excerpt(text: str, keep: int = KEEP) -> str:
    """``text`` without its per-event lines: the last ``keep`` other lines, after a
    header saying how many of each were left out, and then the last per-event line."""
    others: list[str] = []
    events = 0
    last_event: str | None = None
    for line in text.splitlines():
        if _is_event_line(line):
            events += 1
            last_event = line
        else:
            others.append(line)
    shown = others[-keep:] if keep > 0 else []
    header = (
        f"[{events} per-event lines left out; "
        f"{len(others) - len(shown)} earlier lines left out; {len(shown)} lines follow]"
    )
    tail = [f"[last per-event line] {last_event}"] if last_event is not None else []
    return "\n".join([header, *shown, *tail])


def process_logs(directory: Path, keep: int = KEEP) -> Iterator[tuple[str, str]]:
    """(section title, excerpt) for each ``*.log`` in ``directory``, by name; the title
    names the file, which stays in pytest's kept temporary directories for reading
    whole."""
    for path in sorted(directory.glob("*.log")):
        text = path.read_text(errors="replace")
        yield f"process log {path.name} ({path})", log_excerpt(text, keep)
