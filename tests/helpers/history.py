"""History by brute force from the reference model's 200 outcomes (tests/helpers/model.py
``Model.changes``), written apart from worker/history.py and the SQL so that each can be
checked against it: the record as of an instant by replaying the applied events up to
it, the intervals of the digest question by walking them, the expected entries."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from tests.helpers.model import Change, Model
from worker.events import TagDeleted
from worker.timefmt import format_rfc3339


def ocitag(tag_key: tuple[str, str]) -> str:
    return f"{tag_key[0]}:{tag_key[1]}"


def replay_at(
    tag_key: tuple[str, str], changes: list[Change], instant: datetime
) -> tuple[dict[str, str], int] | None:
    """The record (seed's OCITag) and version after replaying, in order, the applied
    events whose time is at or before ``instant``; None when the tag did not exist then."""
    record: dict[str, Any] | None = None
    version = 0
    for change in changes:
        event = change.event
        if event.time > instant:
            continue
        version = change.summary.version or 0
        if isinstance(event, TagDeleted):
            record = None
            continue
        if record is None:
            record = {"created_by": event.actor, "created_on": format_rfc3339(event.time)}
        record.update(
            artifact=event.artifact,
            last_modified_by=event.actor,
            last_modified_on=format_rfc3339(event.time),
        )
    if record is None:
        return None
    shown = {
        "artifact": record["artifact"],
        "repository": tag_key[0],
        "tag": tag_key[1],
        "created_by": record["created_by"],
        "created_on": record["created_on"],
        "last_modified_by": record["last_modified_by"],
        "last_modified_on": record["last_modified_on"],
    }
    return shown, version


def replay_intervals(model: Model, artifact: str, *, history: bool) -> list[dict[str, Any]]:
    """Every span in which a tag pointed at ``artifact`` (only the open ones unless
    ``history``), walking each tag's applied events: the api's items, sorted by tag and
    version."""
    found: list[dict[str, Any]] = []
    for tag_key, changes in model.changes.items():
        pointing: str | None = None  # what the tag points at now (None: not live)
        start: dict[str, Any] | None = None
        for change in changes:
            event = change.event
            now = None if isinstance(event, TagDeleted) else event.artifact
            if start is not None and now != artifact:
                start["until"] = format_rfc3339(event.time)
                found.append(start)
                start = None
            if now == artifact and pointing != artifact:
                start = {
                    "tag": ocitag(tag_key),
                    "from": format_rfc3339(event.time),
                    "until": None,
                    "from_version": change.summary.version,
                }
            pointing = now
        if start is not None:
            found.append(start)
    if not history:
        found = [i for i in found if i["until"] is None]
    return sorted(found, key=lambda i: (i["tag"], i["from_version"]))


def expected_entries(
    changes: list[Change], repointed: set[int] | None = None
) -> list[dict[str, Any]]:
    """A tag's entries as the api shows them (newest first), without ``recorded_at``;
    ``repointed`` the versions expected to be flagged (none by default)."""
    entries = []
    for change in changes:
        event, summary = change.event, change.summary
        entries.append(
            {
                "version": summary.version,
                "change": summary.change,
                "artifact": summary.artifact,
                "by": event.actor,
                "at": format_rfc3339(event.time),
                "event": {"source": event.source, "id": event.id},
                "repointed": summary.version in (repointed or set()),
            }
        )
    return entries[::-1]


def without_recorded_at(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "recorded_at"} for e in entries]


def instants(model: Model) -> list[datetime]:
    """Every applied event's time, a microsecond either side of it, and far before and
    after: where an answer can change, and between."""
    times = {c.event.time for changes in model.changes.values() for c in changes}
    around = {t + timedelta(microseconds=d) for t in times for d in (-1, 0, 1)}
    if times:
        around |= {min(times) - timedelta(days=365), max(times) + timedelta(days=365)}
    return sorted(around)
