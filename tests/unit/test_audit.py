"""``ocitag-worker audit``'s comparison (worker/audit.py): the outcome topic's announced
versions against the store's rows, table-driven and with hypothesis."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.audit import Finding, announced, findings


def outcome(tag: str, version: int, event: str, status: int = 200, oid: str | None = None) -> bytes:
    repository, _, name = tag.rpartition(":")
    body = {
        "id": oid or f"o-{event}",
        "status": status,
        "subject": tag,
        "resourceversion": version,
        "causationid": event,
        "data": {"repository": repository, "tag": name},
    }
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("outcomes", "stored", "want"),
    [
        # everything announced is stored
        ([outcome("r/a:1", 1, "e1"), outcome("r/a:1", 2, "e2")], {"r/a:1": 2}, []),
        # the store is ahead (events after the topic was read): nothing lost
        ([outcome("r/a:1", 1, "e1")], {"r/a:1": 3}, []),
        # the last write is gone
        (
            [outcome("r/a:1", 1, "e1"), outcome("r/a:1", 2, "e2")],
            {"r/a:1": 1},
            [Finding("lost", "r/a:1", 2, 1)],
        ),
        # the row is gone
        ([outcome("r/a:1", 1, "e1")], {}, [Finding("lost", "r/a:1", 1, None)]),
        # after the loss the next event got version 2 again
        (
            [outcome("r/a:1", 1, "e1"), outcome("r/a:1", 2, "e2"), outcome("r/a:1", 2, "e3")],
            {"r/a:1": 2},
            [Finding("reused", "r/a:1", 2, 2)],
        ),
        # a redelivery repeats the same outcome: not a reuse
        (
            [outcome("r/a:1", 1, "e1"), outcome("r/a:1", 1, "e1")],
            {"r/a:1": 1},
            [],
        ),
        # problems announce no version
        ([outcome("r/a:1", 7, "e1", status=409)], {}, []),
    ],
)
def test_findings(outcomes: list[bytes], stored: dict[str, int], want: list[Finding]) -> None:
    assert findings(announced(outcomes), stored) == want


@given(st.lists(st.integers(1, 20), min_size=1, max_size=30), st.integers(0, 25))
def test_lost_exactly_when_the_store_is_behind_the_highest_announced(
    versions: list[int], stored: int
) -> None:
    outcomes = [outcome("r/a:1", v, f"e{n}") for n, v in enumerate(versions)]
    kinds = {f.kind for f in findings(announced(outcomes), {"r/a:1": stored})}
    assert ("lost" in kinds) == (stored < max(versions))
    assert ("reused" in kinds) == (len(set(versions)) < len(versions))
