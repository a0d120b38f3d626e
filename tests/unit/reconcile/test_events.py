"""Reconcile's events: the contract's input events, ids deterministic per run and tag."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.helpers.contract import errors_of, schema_validator
from worker.reconcile.diff import Difference
from worker.reconcile.events import event_id, new_run_id, run_source, to_event

AT = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
MOVED = Difference("moved", "r.example:5000/team/app", "v1", "a" * 64, None, AT)
DELETED = Difference("deleted", "r.example:5000/team/app", "old", None, "b" * 64, AT)


def test_moved_and_deleted_events() -> None:
    moved = to_event(MOVED, "r.example:5000", "run-1")
    assert moved["type"] == "ocitag.moved.v1"
    assert moved["source"] == "urn:ocitag:reconcile:r.example:5000:run-1"
    assert moved["time"] == "2026-12-01T12:00:00.123456Z"
    assert moved["subject"] == "r.example:5000/team/app:v1"
    assert moved["data"] == {
        "repository": "r.example:5000/team/app",
        "tag": "v1",
        "artifact": "a" * 64,
    }
    deleted = to_event(DELETED, "r.example:5000", "run-1")
    assert deleted["type"] == "ocitag.deleted.v1"
    assert "artifact" not in deleted["data"]


def test_moved_event_matches_the_published_input_schema() -> None:
    event = to_event(MOVED, "r.example:5000", "run-1")
    assert errors_of(schema_validator("tag-moved-event.schema.json"), event) == []


def test_ids_are_deterministic_per_run_tag_and_kind() -> None:
    assert event_id("run-1", MOVED) == event_id("run-1", MOVED)
    assert event_id("run-1", MOVED) != event_id("run-2", MOVED)
    other = Difference("moved", MOVED.repository, "v2", MOVED.artifact, None, AT)
    assert event_id("run-1", MOVED) != event_id("run-1", other)
    assert run_source("h", "r") == "urn:ocitag:reconcile:h:r"


def test_run_ids_sort_by_start_and_differ() -> None:
    first, second = new_run_id(AT), new_run_id(AT)
    assert first.startswith("20261201T120000Z-") and first != second
