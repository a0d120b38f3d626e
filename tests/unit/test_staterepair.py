"""``ocitag-worker state repair``'s rule (worker/staterepair.py ``decide``): the state
topic's last record of a tag against its row, after a failover lost writes. Pure:
table-driven and hypothesis; the records go through the real builders and the topic's
fold (worker/state.py), as the command reads them."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.strategies import BASE, digest, tag_record
from worker.decision import TagRecord
from worker.state import (
    LastRecord,
    StateRecord,
    TopicRecord,
    last_records,
    tombstone,
    upsert,
)
from worker.staterepair import REPAIR_SOURCE, Repaired, decide, entry, plan, print_repaired

OID = "docker.io/library/app:1.0"


def row(version: int, **changes: Any) -> TagRecord:
    return tag_record(version=version, **{"last_modified_by": f"actor{version}", **changes})


def deleted(live: TagRecord, at_seconds: int = 100, by: str = "dan") -> TagRecord:
    """``live`` deleted by an applied deletion (worker/decision.py's tombstone row)."""
    on = BASE + timedelta(seconds=at_seconds)
    return replace(
        live,
        version=live.version + 1,
        last_modified_by=by,
        last_modified_on=on,
        last_event_source="urn:test",
        last_event_id=f"d{at_seconds}",
        deleted_on=on,
        deleted_by=by,
    )


def on_topic(*records: StateRecord) -> LastRecord:
    """The last record of the key, as the command folds what it read."""
    folded = last_records((r.key, r.value, r.headers) for r in records)
    return folded[OID]


def bare(record: StateRecord) -> LastRecord:
    """A record written before the event headers: content-type and version only."""
    headers = [h for h in record.headers if h[0] in ("content-type", "version")]
    return last_records([(record.key, record.value, headers)])[OID]


@pytest.mark.parametrize(
    ("last", "stored", "action", "reason"),
    [
        (on_topic(upsert(row(5))), row(4), "restore", "the topic is ahead of the store"),
        (on_topic(upsert(row(5))), None, "restore", "the topic is ahead of the store"),
        (on_topic(upsert(row(5))), row(5), "none", "in step"),
        (on_topic(upsert(row(5))), row(7), "none", "the store is newer"),
        # the store's tombstone of a later deletion is newer too
        (on_topic(upsert(row(5))), deleted(row(5)), "none", "the store is newer"),
        (on_topic(tombstone(OID, 6, deleted(row(5)))), row(5), "restore", "the topic deleted it"),
        (on_topic(tombstone(OID, 6, deleted(row(5)))), row(6), "none", "in step"),
        # a creation and its deletion both lost: the tombstone's headers rebuild the row
        (on_topic(tombstone(OID, 6, deleted(row(5)))), None, "restore", "the topic deleted it"),
        (
            bare(tombstone(OID, 6, deleted(row(5)))),
            None,
            "none",
            "deleted on the topic, no row and no record to restore",
        ),
        # a tombstone republished for a pruned row has no version
        (
            on_topic(tombstone(OID, None)),
            row(3),
            "none",
            "the topic's record has no version (a pruned tombstone)",
        ),
        # a later event applied after the promotion without a new version (a 404
        # deletion of the tag the store still had as deleted): neither side wins
        (
            on_topic(upsert(row(5))),
            deleted(row(3), at_seconds=9),
            "conflict",
            "the store applied a later event since (time 2026-01-01T00:00:09Z, source "
            "urn:test, id d9): reconcile the tag",
        ),
        # written before the event headers: a deletion's time is unknown
        (
            bare(tombstone(OID, 6, deleted(row(5)))),
            row(5),
            "unrepairable",
            "a tombstone without the event headers: its deletion's time is unknown",
        ),
        (
            LastRecord(OID, {"(value)": "not json"}, 5, {"version": "5"}),
            row(4),
            "unrepairable",
            "the topic's value is not a record: 'version'",
        ),
        (
            on_topic(StateRecord(OID.encode(), upsert(row(5)).value, 6, row(5))),
            row(4),
            "unrepairable",
            "value version 5 != header 6",
        ),
    ],
)
def test_the_rule(last: LastRecord, stored: TagRecord | None, action: str, reason: str) -> None:
    decided = decide(last, stored)
    assert (decided.action, decided.reason) == (action, reason)
    assert decided.topic_version == last.version
    assert decided.store_version == (stored.version if stored else None)
    assert (decided.record is not None) == (action == "restore")


def test_a_live_record_comes_back_exactly_as_the_worker_wrote_it() -> None:
    lost = row(5, last_event_source="https://registry.example.com/hook", last_event_id="x 1")
    assert decide(on_topic(upsert(row(4)), upsert(lost)), row(4)).record == lost


def test_a_deletion_comes_back_with_its_key_actor_and_the_rows_artifact() -> None:
    gone = deleted(row(5))
    restored = decide(on_topic(upsert(row(5)), tombstone(OID, 6, gone)), row(5)).record
    assert restored == gone
    assert restored is not None and restored.artifact == digest(5) and not restored.live


def test_a_lost_creation_and_deletion_come_back_as_the_tombstone_row() -> None:
    gone = deleted(row(1, created_by="carl"))
    assert decide(on_topic(tombstone(OID, 2, gone)), None).record == gone


def test_a_deletion_after_a_lost_move_keeps_the_artifact_of_its_last_life() -> None:
    moved = row(6, created_by="carl")  # the lost move (and re-creation)
    gone = deleted(moved)
    restored = decide(on_topic(tombstone(OID, 7, gone)), row(5)).record
    assert restored == gone
    assert restored is not None and restored.artifact == digest(6)


def test_a_stale_row_republished_by_a_redelivery_does_not_hide_the_lost_change() -> None:
    """After the failover a redelivered change republishes its tag's row as it now is
    (the stale version 7) after the lost deletion's tombstone (11): the fold keeps the
    latest change by event key, and the deletion is restored."""
    gone = deleted(row(10), at_seconds=40)
    last = on_topic(upsert(row(7)), upsert(row(10)), tombstone(OID, 11, gone), upsert(row(7)))
    assert last.version == 11
    assert decide(last, row(7)).record == gone


def test_records_without_event_headers_rank_before_any_with_them() -> None:
    """Written before the upgrade: older than every record with an event key; among
    themselves the last wins."""

    def plain(r: StateRecord) -> TopicRecord:
        return (r.key, r.value, [h for h in r.headers if h[0] in ("content-type", "version")])

    def full(r: StateRecord) -> TopicRecord:
        return (r.key, r.value, r.headers)

    mixed = [full(upsert(row(9))), plain(upsert(row(3))), full(upsert(row(2)))]
    assert last_records(mixed)[OID].version == 9
    assert last_records([plain(upsert(row(4))), plain(upsert(row(2)))])[OID].version == 2


def test_a_live_record_without_the_event_headers_gets_the_repair_source() -> None:
    restored = decide(bare(upsert(row(5))), row(3)).record
    assert restored is not None
    assert (restored.last_event_source, restored.last_event_id) == (REPAIR_SOURCE, "v5")
    assert restored.order_key[0] == row(5).last_modified_on
    assert replace(restored, last_event_source="urn:test", last_event_id="e5") == row(5)


@pytest.mark.parametrize(
    ("record", "change", "by"),
    [(row(5), "baseline", "actor5"), (deleted(row(5)), "deleted", "dan")],
)
def test_a_restore_writes_one_history_entry(record: TagRecord, change: str, by: str) -> None:
    at = datetime(2026, 12, 6, tzinfo=UTC)
    found = entry(record, at)
    assert found is not None
    assert (found.version, found.change, found.by, found.artifact) == (
        record.version,
        change,
        by,
        digest(5),
    )
    assert (found.at, found.recorded_at, found.repointed) == (record.last_modified_on, at, False)
    assert (found.source, found.event_id) == (record.last_event_source, record.last_event_id)


def test_a_deletion_of_a_row_never_live_writes_no_entry() -> None:
    never = row(0, artifact=None, created_by=None, created_on=None)
    assert entry(deleted(never), BASE) is None


def test_the_plan_decides_every_tag_of_the_topic_by_its_row() -> None:
    other = row(2, tag="2.0")
    lasts = last_records(
        (r.key, r.value, r.headers) for r in (upsert(row(5)), upsert(other), upsert(row(6)))
    )
    planned = plan(lasts, {("docker.io/library/app", "1.0"): row(4)})
    assert [(p.ocitag_id, p.action, p.store_version) for p in planned] == [
        (OID, "restore", 4),
        ("docker.io/library/app:2.0", "restore", None),
    ]
    assert planned[0].record == row(6)  # the LAST record of the key


@pytest.mark.parametrize(
    ("actions", "applied", "code"),
    [
        ([], False, 0),
        (["restore"], False, 3),
        (["restore"], True, 0),
        (["restore", "unrepairable"], True, 3),
        (["conflict"], True, 3),
    ],
)
def test_exit_codes(actions: list[str], applied: bool, code: int) -> None:
    repairs = [decide(on_topic(upsert(row(5))), row(4)) for _ in actions]
    repairs = [replace(r, action=a) for r, a in zip(repairs, actions, strict=True)]  # type: ignore[arg-type]
    done = Repaired(7, repairs, applied)
    assert done.exit_code == code
    out = io.StringIO()
    print_repaired(done, True, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[-1] == {
        "record": "summary",
        "topic_records": 7,
        "applied": applied,
        "restore": actions.count("restore"),
        "conflict": actions.count("conflict"),
        "unrepairable": actions.count("unrepairable"),
    }
    assert [line["action"] for line in lines[:-1]] == actions


# ---- properties

versions = st.integers(min_value=0, max_value=50)


@st.composite
def topic_records(draw: st.DrawFn) -> LastRecord:
    """The last record of a tag: a live record or a deletion, with or without headers."""
    version = draw(st.integers(min_value=1, max_value=50))
    live = draw(st.booleans())
    built = upsert(row(version)) if live else tombstone(OID, version, deleted(row(version - 1)))
    return on_topic(built) if draw(st.booleans()) else bare(built)


@given(topic_records(), st.one_of(st.none(), versions), st.booleans())
def test_never_backwards_restore_iff_ahead_and_idempotent(
    last: LastRecord, stored_version: int | None, stored_live: bool
) -> None:
    stored = None
    if stored_version is not None:
        stored = row(stored_version) if stored_live else deleted(row(stored_version), 200, "eve")
    decided = decide(last, stored)
    topic = last.version
    assert topic is not None
    ahead = stored is None or stored.version < topic
    if not ahead:
        assert decided.action == "none"  # a row the store has newer (or equal) wins
    if decided.action == "restore":
        assert ahead and decided.record is not None
        assert decided.record.version == topic  # never backwards: topic > stored
        assert decided.record.live == (last.value is not None)
        # nor back in event order: the row's key is not later than the restored one's
        assert stored is None or stored.order_key <= decided.record.order_key
        # restoring again changes nothing
        assert decide(last, decided.record).action == "none"
    if decided.action == "conflict":
        assert ahead and stored is not None and decided.record is None
    later = stored is not None and not stored.live  # deleted at 200 s: after any topic time
    if ahead and last.value is not None:
        assert decided.action == ("conflict" if later else "restore")
    if ahead and last.value is None:
        has_headers = "event-time" in last.headers
        lacking = "unrepairable" if stored is not None else "none"
        wanted = ("conflict" if later else "restore") if has_headers else lacking
        assert decided.action == wanted
