"""A small reference model of the contract's "Semantics" (docs/contract.md), written
separately from the worker's code so that the two can be checked against each other.

Events are delivered one at a time; the model answers each with a summary of its
outcome and keeps the rows the database should hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from worker.events import TagMoved


@dataclass(frozen=True)
class Summary:
    """What matters of an outcome: status, change, version and artifact (200 only)."""

    status: int
    change: str | None = None
    version: int | None = None
    artifact: str | None = None
    reason: str | None = None


@dataclass
class Row:
    artifact: str
    created_by: str
    created_on: datetime
    last_modified_by: str
    last_modified_on: datetime
    version: int
    key: tuple[datetime, str, str]


@dataclass
class Model:
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    seen: dict[tuple[str, str], tuple[bytes, Summary]] = field(default_factory=dict)

    def deliver(self, e: TagMoved) -> Summary:
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

    def _decide(self, e: TagMoved) -> Summary:
        tag = (e.repository, e.tag)
        row = self.rows.get(tag)
        key = (e.time, e.source, e.id)
        if row is not None and not key > row.key:
            return Summary(409, reason="superseded")
        if e.previous_artifact is not None and (row is None or row.artifact != e.previous_artifact):
            return Summary(412)
        if e.expected_version is not None and (row.version if row else 0) != e.expected_version:
            return Summary(412)
        if row is None:
            self.rows[tag] = Row(e.artifact, e.actor, e.time, e.actor, e.time, 1, key)
            return Summary(200, "created", 1, e.artifact)
        change = "unchanged" if row.artifact == e.artifact else "updated"
        row.artifact, row.last_modified_by, row.last_modified_on = e.artifact, e.actor, e.time
        row.version += 1
        row.key = key
        return Summary(200, change, row.version, e.artifact)
