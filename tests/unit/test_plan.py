"""The pure steps of applying a batch (worker/plan.py): ``survey``'s one pass gives the
first occurrence of each (source, id) and every tag the batch names, as the separate
passes it replaced did."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.strategies import BASE, digest, histories, make_event
from worker.decode import decode
from worker.events import Invalid, RawRecord, TagEvent
from worker.plan import Item, events_by_tag, first_occurrences, survey

# a decodable event whose data breaks a rule (422): it has an identity but names no tag
_INVALID = json.dumps(
    {
        "specversion": "1.0",
        "id": "bad",
        "source": "s1",
        "type": "ocitag.moved.v1",
        "time": "2026-01-01T00:00:00Z",
        "data": {"repository": "acme/app", "tag": "-bad", "artifact": "x"},
    }
).encode()


def _items(events: list[TagEvent], invalid_at: list[int]) -> list[Item]:
    items = [
        Item(RawRecord("ocitag.events", 0, n, 0, None, b"", ()), e) for n, e in enumerate(events)
    ]
    record = RawRecord("ocitag.events", 0, 999, 0, None, _INVALID, ())
    invalid = decode(record, 65_536)
    assert isinstance(invalid, Invalid)
    for at in sorted(invalid_at, reverse=True):
        items.insert(min(at, len(items)), Item(record, invalid))
    return items


@given(history=histories(), invalid_at=st.lists(st.integers(0, 30), max_size=3))
def test_a_survey_is_the_first_occurrences_and_every_tag_named(
    history: list[TagEvent], invalid_at: list[int]
) -> None:
    items = _items(history, invalid_at)
    firsts, tags = survey(items)
    reference: dict[tuple[str, str], int] = {}
    for index, item in enumerate(items):
        if item.key not in reference:
            reference[item.key] = index
    assert firsts == reference == first_occurrences(items)
    assert list(firsts.items()) == list(reference.items())  # in batch order
    assert tags == list(events_by_tag(items, range(len(items))))


def test_a_survey_of_duplicates_and_an_invalid_event() -> None:
    one, other = make_event("a", digest(1), BASE), make_event("b", digest(2), BASE)
    # a, the invalid one, a again, b, a again
    firsts, tags = survey(_items([one, one, other, one], [1]))
    assert firsts == {(one.source, one.id): 0, ("s1", "bad"): 1, (other.source, other.id): 3}
    assert tags == [(one.repository, one.tag), (other.repository, other.tag)]
