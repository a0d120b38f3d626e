"""The state topic's records and their reading back (worker/state.py): what an applied
change produces, what a repeat produces, and the fold and comparison of
``ocitag-worker state verify``. Pure: table-driven and hypothesis."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.store import items
from tests.helpers.strategies import BASE, digest, make_event
from tests.helpers.strategies import tag_record as record
from worker.decision import TagRecord
from worker.outcomes import Outcome
from worker.plan import ProcessedRow
from worker.state import (
    UNREADABLE,
    Difference,
    current,
    differences,
    fold,
    refreshed,
    repeated_tags,
    state_value,
    tombstone,
    upsert,
)
from worker.statebackfill import missing

# ---- records


def test_an_upsert_is_the_ocitag_json_plus_version_keyed_by_the_ocitag_id() -> None:
    built = upsert(record(version=3))
    assert built.key == b"docker.io/library/app:1.0"
    assert json.loads(built.value or b"") == {
        "artifact": digest(3),
        "repository": "docker.io/library/app",
        "tag": "1.0",
        "created_by": "alice",
        "created_on": "2026-01-01T00:00:00Z",
        "last_modified_by": "bob",
        "last_modified_on": "2026-01-01T00:00:03Z",
        "version": 3,
    }
    assert built.headers == [
        ("content-type", b"application/json"),
        ("version", b"3"),
        ("event-time", b"2026-01-01T00:00:03Z"),
        ("event-source", b"urn:test"),
        ("event-id", b"e3"),
    ]
    assert built.kind == "upsert"


def test_a_tombstone_has_a_null_value_and_says_its_version_in_a_header() -> None:
    built = tombstone("docker.io/library/app:1.0", 4)
    assert (built.key, built.value, built.kind) == (b"docker.io/library/app:1.0", None, "tombstone")
    assert ("version", b"4") in built.headers
    assert not any(name.startswith("event-") for name, _ in built.headers)  # no row


def test_a_tombstone_from_its_row_carries_the_deletion_key_and_actor() -> None:
    row = record(version=4, deleted_on=BASE, deleted_by="carol", last_modified_on=BASE)
    built = tombstone("docker.io/library/app:1.0", 4, row)
    assert built.headers[1:] == [
        ("version", b"4"),
        ("event-time", b"2026-01-01T00:00:00Z"),
        ("event-source", b"urn:test"),
        ("event-id", b"e4"),
        ("deleted-by", b"carol"),
        ("artifact", digest(4).encode()),
        ("created-by", b"alice"),
        ("created-on", b"2026-01-01T00:00:00Z"),
    ]


@pytest.mark.parametrize(
    ("row", "value", "version"),
    [
        (None, None, None),  # no row (a pruned tombstone): a tombstone, version unknown
        (record(version=5, deleted_on=BASE, deleted_by="carol"), None, 5),
        (record(version=6), state_value(record(version=6)), 6),
    ],
)
def test_the_current_record_of_a_tag_follows_its_row(
    row: TagRecord | None, value: dict[str, Any] | None, version: int | None
) -> None:
    built = current("docker.io/library/app:1.0", row)
    assert (json.loads(built.value) if built.value else None, built.version) == (value, version)


def test_a_repeat_gets_the_tag_as_it_now_is_and_a_first_processing_keeps_its_own() -> None:
    key = b"docker.io/library/app:1.0"
    first = Outcome(key, b"v", 200, "updated", state=upsert(record(version=2)))
    again = Outcome(key, b"v", 200, "updated", replay=True, state=upsert(record(version=2)))
    rejected = Outcome(key, b"v", 409, replay=True)
    now = record(version=4)
    out = refreshed([first, again, rejected], {"docker.io/library/app:1.0": now})
    assert out[0].state == upsert(record(version=2))
    assert out[1].state == upsert(now)
    assert out[2].state is None
    gone = refreshed([again], {})
    assert gone[0].state == tombstone("docker.io/library/app:1.0", None)


def test_the_tags_to_refresh_are_those_repeating_an_earlier_applied_change() -> None:
    applied, superseded, new = (
        make_event(tag, digest(n), BASE, event_id=f"e{n}")
        for n, tag in enumerate(["1.0", "2.0", "3.0"])
    )
    batch = items([applied, superseded, new, applied])
    earlier = {
        (applied.source, applied.id): ProcessedRow(applied.fingerprint, BASE, 200),
        (superseded.source, superseded.id): ProcessedRow(superseded.fingerprint, BASE, 409),
    }
    assert repeated_tags(batch, earlier) == [("docker.io/library/app", "1.0")]


# ---- reading back

KEYS = st.sampled_from([f"docker.io/library/app:{n}" for n in range(6)])
VALUES = st.none() | st.builds(lambda v: {"artifact": digest(v), "version": v}, st.integers(1, 9))
LOGS = st.lists(st.tuples(KEYS, VALUES), max_size=60)


def encoded(log: list[tuple[str, dict[str, Any] | None]]) -> list[tuple[bytes, bytes | None]]:
    return [(k.encode(), None if v is None else json.dumps(v).encode()) for k, v in log]


def compacted(log: list[tuple[str, dict[str, Any] | None]], drop_tombstones: bool) -> list[Any]:
    """What the log cleaner may leave: the last record of each key, in offset order,
    tombstones dropped once delete.retention.ms passed."""
    last = {key: index for index, (key, _) in enumerate(log)}
    kept = [(k, v) for i, (k, v) in enumerate(log) if last[k] == i]
    return [(k, v) for k, v in kept if not (drop_tombstones and v is None)]


@given(LOGS, st.booleans())
def test_the_fold_is_the_same_before_and_after_compaction(
    log: list[tuple[str, dict[str, Any] | None]], drop_tombstones: bool
) -> None:
    assert fold(encoded(log)) == fold(encoded(compacted(log, drop_tombstones)))


@given(LOGS)
def test_the_fold_holds_each_key_whose_last_value_is_not_null(
    log: list[tuple[str, dict[str, Any] | None]],
) -> None:
    folded = fold(encoded(log))
    for key in {k for k, _ in log}:
        last = [v for k, v in log if k == key][-1]
        assert folded.get(key) == last


def test_the_fold_skips_keyless_records_and_keeps_an_unreadable_value_visible() -> None:
    folded = fold([(None, b"{}"), (b"a:1", b"not json"), (b"b:1", b"[1]")])
    assert folded == {"a:1": {UNREADABLE: "not json"}, "b:1": {UNREADABLE: "[1]"}}


MAPS = st.dictionaries(KEYS, st.builds(lambda v: {"version": v}, st.integers(1, 3)), max_size=6)


@given(MAPS, MAPS)
def test_differences_name_every_key_on_which_the_two_disagree(
    topic: dict[str, dict[str, Any]], live: dict[str, dict[str, Any]]
) -> None:
    found = {d.ocitag_id: d for d in differences(topic, live)}
    assert {k for k, d in found.items() if d.kind == "missing"} == live.keys() - topic.keys()
    assert {k for k, d in found.items() if d.kind == "extra"} == topic.keys() - live.keys()
    both = topic.keys() & live.keys()
    assert {k for k, d in found.items() if d.kind == "differing"} == {
        k for k in both if topic[k] != live[k]
    }
    assert differences(live, live) == []


def test_a_differing_tag_names_the_fields_with_both_values() -> None:
    topic = {"a:1": {"artifact": digest(1), "version": 2, UNREADABLE: "x"}}
    live = {"a:1": {"artifact": digest(2), "version": 2}}
    (found,) = differences(topic, live)
    assert found == Difference(
        "a:1", "differing", {"artifact": (digest(1), digest(2)), UNREADABLE: ("x", None)}
    )
    assert found.as_json()["fields"]["artifact"] == {"topic": digest(1), "live": digest(2)}


@pytest.mark.parametrize(
    ("topic", "live", "todo"),
    [
        (set(), [("r", "b"), ("r", "a")], [("r", "a"), ("r", "b")]),
        ({"r:a"}, [("r", "a"), ("r", "b")], [("r", "b")]),
        ({"r:a", "r:b", "r:gone"}, [("r", "a"), ("r", "b")], []),
        ({"r:a:b"}, [("r:a", "b"), ("r", "a:b")], []),  # the same OCITag ID either way
    ],
)
def test_backfill_produces_the_live_tags_the_topic_lacks(
    topic: set[str], live: list[tuple[str, str]], todo: list[tuple[str, str]]
) -> None:
    assert missing(topic, live) == todo
