"""The pipeline's decisions that need no broker: a refused event is rejected alone (and
never stops the worker), dead letters, backoff. The store is a fake behind the
EventStore protocol; the real one is tested against PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tests.helpers.strategies import BASE, digest, make_event
from worker.decode import decode
from worker.errors import PermanentError
from worker.events import RawRecord, Undecodable
from worker.outcomes import Outcome
from worker.pipeline import Backoff, Pipeline, _truncate_utf8
from worker.plan import Item
from worker.settings import load_settings


class RefusingStore:
    """Applies everything except events whose id is in ``refuse``."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.calls: list[int] = []

    async def apply(self, items: Sequence[Item], processed_at: datetime) -> list[Outcome]:
        self.calls.append(len(items))
        if any(item.event.id in self.refuse for item in items):
            raise PermanentError("value too long for type character varying(10)")
        return [Outcome(b"k", b"ok:" + item.event.id.encode(), 200, "created") for item in items]

    async def ping(self) -> None:
        return None


def pipeline(store: RefusingStore) -> Pipeline:
    return Pipeline(load_settings(environ={}), None, None, store, None)  # type: ignore[arg-type]


def items(*ids: str) -> list[Item]:
    return [
        Item(
            RawRecord("in", 0, n, 1_700_000_000_000, None, b"", ()),
            make_event("t", digest(n), BASE, event_id=i),
        )
        for n, i in enumerate(ids)
    ]


async def test_a_refused_event_is_rejected_alone_and_the_rest_applied() -> None:
    store = RefusingStore({"bad"})
    outcomes = await pipeline(store)._apply(items("a", "bad", "c"), datetime.now(UTC))
    assert [o.status for o in outcomes] == [200, 500, 200]
    body: dict[str, Any] = json.loads(outcomes[1].value)
    assert (
        body["data"]["type"].endswith("/internal")
        and "could not be stored" in body["data"]["detail"]
    )
    assert store.calls == [3, 1, 1, 1]


async def test_a_refused_single_event_does_not_stop_the_worker() -> None:
    outcomes = await pipeline(RefusingStore({"bad"}))._apply(items("bad"), datetime.now(UTC))
    assert [o.status for o in outcomes] == [500]


async def test_internal_outcome_is_the_same_on_redelivery() -> None:
    """Not stored, so rebuilt on each delivery: nothing of the wall clock may enter it."""
    first = await pipeline(RefusingStore({"bad"}))._apply(items("bad"), datetime.now(UTC))
    again = await pipeline(RefusingStore({"bad"}))._apply(items("bad"), datetime.now(UTC))
    assert first[0].value == again[0].value


def test_dead_letter_keeps_the_record_and_says_where_and_why() -> None:
    raw = RawRecord("in", 2, 41, 0, b"key", b"\xff", (("trace", b"t"),))
    decoded = decode(raw, 1024)
    assert isinstance(decoded, Undecodable)
    topic, key, value, headers = pipeline(RefusingStore(set()))._dead_letter(raw, decoded)
    found = dict(headers)
    assert (topic, key, value, found["trace"]) == ("ocitag.events.dlq", b"key", b"\xff", b"t")
    assert (
        found["ocitag_dlq_topic"],
        found["ocitag_dlq_partition"],
        found["ocitag_dlq_offset"],
    ) == (b"in", b"2", b"41")
    assert found["ocitag_dlq_status"] == b"400" and b"UTF-8" in found["ocitag_dlq_reason"]


def test_truncation_never_splits_a_character() -> None:
    cut = _truncate_utf8("é" * 10, 5)
    assert cut == "éé".encode()
    cut.decode("utf-8")


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1
    assert 0.1 <= delays[2] <= 0.4
    assert all(0.5 <= d <= 1.0 for d in delays[4:])


def test_outcome_ids_are_rfc_4122_uuid5() -> None:
    import uuid

    from worker.outcomes import _NAMESPACE, outcome_id

    for source, event_id in [("s", "e"), ("https://r.example/hook", "ünïcode-id"), ("", "")]:
        expected = uuid.uuid5(_NAMESPACE, f"{source}\n{event_id}\n{b'fp'.hex()}")
        assert outcome_id(source, event_id, b"fp") == str(expected)
