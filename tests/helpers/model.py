"""A small reference model of the contract's "Semantics" (docs/contract.md), written
separately from the worker's code so that the two can be checked against each other.

Events (moves and deletions) are delivered one at a time; the model answers each with a
summary of its outcome and keeps the rows the database should hold, tombstones included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from worker.events import TagDeleted, TagEvent


@dataclass(frozen=True)
class Summary:
    """What matters of an outcome: status, change, version and artifact (200 only: for
    a deletion the artifact of the record it removed)."""

    status: int
    change: str | None = None
    version: int | None = None
    artifact: str | None = None
    reason: str | None = None


@dataclass
class Row:
    artifact: str | None
    created_by: str | None
    created_on: datetime | None
    last_modified_by: str
    last_modified_on: datetime
    version: int
    key: tuple[datetime, str, str]
    deleted_on: datetime | None = None
    deleted_by: str | None = None

    @property
    def live(self) -> bool:
        return self.deleted_on is None


@dataclass(frozen=True)
class Change:
    """A 200 outcome of the model: the event applied, its summary, and for a move the
    artifact the tag pointed at before when it now points elsewhere (live or tombstone)."""

    event: TagEvent
    summary: Summary
    replaced: str | None = None


@dataclass
class Model:
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    seen: dict[tuple[str, str], tuple[bytes, Summary]] = field(default_factory=dict)
    #: every 200 outcome per tag, in the order given (= version order)
    changes: dict[tuple[str, str], list[Change]] = field(default_factory=dict)

    def deliver(self, e: TagEvent) -> Summary:
        return self._once(e.source, e.id, e.fingerprint, lambda: self._decide(e))

    def deliver_invalid(self, source: str, event_id: str, fingerprint: bytes) -> Summary:
        """A decodable event whose data breaks a rule (422), recorded like any other."""
        return self._once(source, event_id, fingerprint, lambda: Summary(422))

    def _once(
        self, source: str, event_id: str, fingerprint: bytes, decide: Callable[[], Summary]
    ) -> Summary:
        first = self.seen.get((source, event_id))
        if first is not None:
            seen_print, summary = first
            return summary if seen_print == fingerprint else Summary(409, reason="id-reused")
        summary = decide()
        self.seen[(source, event_id)] = (fingerprint, summary)
        return summary

    def _decide(self, e: TagEvent) -> Summary:
        summary, replaced = self._apply(e)
        if summary.status == 200:
            self.changes.setdefault((e.repository, e.tag), []).append(Change(e, summary, replaced))
        return summary

    def _apply(self, e: TagEvent) -> tuple[Summary, str | None]:
        tag = (e.repository, e.tag)
        row = self.rows.get(tag)
        key = (e.time, e.source, e.id)
        if row is not None and not key > row.key:
            return Summary(409, reason="superseded"), None
        live = row if row is not None and row.live else None
        if isinstance(e, TagDeleted) and live is None:  # 404, but the key is recorded
            if row is None:
                self.rows[tag] = Row(None, None, None, e.actor, e.time, 0, key, e.time, e.actor)
            else:
                self._stamp(row, e, key)
            return Summary(404, reason="not-found"), None
        if not self._preconditions_hold(live, e):
            return Summary(412), None
        if isinstance(e, TagDeleted):
            assert live is not None
            before = live.artifact
            live.version += 1
            self._stamp(live, e, key)
            return Summary(200, "deleted", live.version, before), None
        if live is None:
            version = (row.version if row else 0) + 1
            last = row.artifact if row else None
            self.rows[tag] = Row(e.artifact, e.actor, e.time, e.actor, e.time, version, key)
            moved = last if last is not None and last != e.artifact else None
            return Summary(200, "created", version, e.artifact), moved
        change = "unchanged" if live.artifact == e.artifact else "updated"
        moved = live.artifact if change == "updated" else None
        live.artifact, live.last_modified_by, live.last_modified_on = e.artifact, e.actor, e.time
        live.version += 1
        live.key = key
        return Summary(200, change, live.version, e.artifact), moved

    @staticmethod
    def _preconditions_hold(live: Row | None, e: TagEvent) -> bool:
        if e.previous_artifact is not None and (
            live is None or live.artifact != e.previous_artifact
        ):
            return False
        return e.expected_version is None or (live.version if live else 0) == e.expected_version

    @staticmethod
    def _stamp(row: Row, e: TagDeleted, key: tuple[datetime, str, str]) -> None:
        """A deletion's mark on the row: deleted, with the deletion's key."""
        row.last_modified_by, row.last_modified_on, row.key = e.actor, e.time, key
        row.deleted_on, row.deleted_by = e.time, e.actor
