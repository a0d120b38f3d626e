"""The idempotency record's key of an event (worker/store.py ``event_key``): SHA-256 of
the source's length, the source and the id, whatever the remembered sources' hashes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker import store
from worker.store import event_key


def _from_scratch(source: str, event_id: str) -> bytes:
    """The key as migration 0004 computes it (and the store did before remembering)."""
    raw = source.encode()
    return hashlib.sha256(len(raw).to_bytes(4, "big") + raw + event_id.encode()).digest()[:16]


@given(keys=st.lists(st.tuples(st.sampled_from(["s1", "s2", "ü", ""]) | st.text(), st.text())))
def test_the_key_is_the_hash_of_source_length_source_and_id(keys: list[tuple[str, str]]) -> None:
    for source, event_id in keys * 2:  # each source again: from the remembered state
        assert event_key((source, event_id)) == _from_scratch(source, event_id)


def test_the_remembered_sources_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_SOURCES_REMEMBERED", 3)
    monkeypatch.setattr(store, "_source_states", {})
    for n in range(10):
        assert event_key((f"s{n}", "id")) == _from_scratch(f"s{n}", "id")
        assert len(store._source_states) <= 3
    # a source's state is copied, never updated: its next key is not disturbed
    assert event_key(("s9", "other")) == _from_scratch("s9", "other")
