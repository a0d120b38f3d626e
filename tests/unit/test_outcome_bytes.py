"""Every outcome is byte for byte what the builder built before it was made lean
(tests/helpers/outcomes_reference.py, the previous builder kept as the oracle): for
generated histories (200 created, updated, unchanged and deleted; 409 superseded moves
and deletions; 412; 404; duplicates and id reuse, in and across batches; rebuilt
replays), generated events turned invalid (422), any record (400) and refused ones
(500), under generated worker sources, problem bases, release-tag globs and times. The
state record and the decision's next row are compared too."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import outcomes_reference as reference
from tests.helpers.strategies import cloud_events, histories, times
from worker.decision import Applied, Decision, Rejected, TagRecord, decide
from worker.decode import decode
from worker.events import Invalid, RawRecord, TagDeleted, TagEvent, TagMoved, Undecodable
from worker.history import DEFAULT_IMMUTABLE, ImmutableTags
from worker.outcomes import (
    Outcome,
    OutcomeContext,
    batch_outcomes,
    id_reused_outcome,
    internal_outcome,
    invalid_outcome,
    processed_row,
    replayable,
    replayed,
    same_content,
    undecodable_outcome,
)
from worker.plan import Item, decide_tag, events_by_tag, first_occurrences
from worker.problems import ErrorItem, Problem, ProblemKind

texts = st.text(max_size=30).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
#: settings are never empty (a rebuild falls back on the current context's when a record
#: has none)
contexts = st.builds(
    OutcomeContext,
    st.one_of(st.just("urn:ocitag-worker:test"), texts.filter(bool)),
    st.one_of(st.just("https://ocitag-worker.dev/problems/"), texts.filter(bool)),
    st.sampled_from([ImmutableTags(()), DEFAULT_IMMUTABLE, ImmutableTags(("a", "c*"))]),
)


def built(outcome: Outcome) -> reference.Built:
    state = outcome.state
    return reference.Built(
        outcome.key,
        outcome.value,
        outcome.status,
        outcome.change,
        None if state is None else (state.key, state.value, state.version),
        outcome.repointed,
    )


def _items(history: list[TagEvent], binary: list[bool], at_offset: int = 0) -> list[Item]:
    return [
        Item(
            RawRecord("ocitag.events", 1, at_offset + n, 0, None, b"", ()),
            replace(event, binary=binary[n % len(binary)]),
        )
        for n, event in enumerate(history)
    ]


@given(
    history=histories(),
    ctx=contexts,
    at=times,
    later=times,
    binary=st.lists(st.booleans(), min_size=1, max_size=5),
    split=st.integers(0, 30),
)
def test_a_history_in_two_batches_is_built_as_before(
    history: list[TagEvent],
    ctx: OutcomeContext,
    at: datetime,
    later: datetime,
    binary: list[bool],
    split: int,
) -> None:
    """Two batches as the store runs them (the second sees the first's rows and records):
    each new item's outcome and record, each repeat (replayed as it was, kept or
    rebuilt, or 409 id reused), each state record."""
    items = _items(history, binary)
    rows: dict[tuple[str, str], TagRecord | None] = {}
    earlier: dict[tuple[str, str], Any] = {}
    for batch, processed_at in ((items[:split], at), (items[split:], later)):
        firsts = first_occurrences(batch)
        new = sorted(i for key, i in firsts.items() if key not in earlier)
        decisions: dict[int, Decision] = {}
        for tag, indexes in events_by_tag(batch, new).items():
            before = rows.get(tag)
            after, decided = decide_tag(before, batch, indexes)
            decisions.update(zip(indexes, decided, strict=True))
            rows[tag] = after if after is not None else before
        outcomes = batch_outcomes(
            ctx, batch, new=new, decisions=decisions, earlier=earlier, processed_at=processed_at
        )
        for index, (item, outcome) in enumerate(zip(batch, outcomes, strict=True)):
            row = earlier.get(item.key)
            if index in decisions or (index in new and isinstance(item.event, Invalid)):
                expected = reference.decided(ctx, item, decisions.get(index), processed_at)
            elif row is None:  # a repeat of an item of this batch
                first = firsts[item.key]
                if same_content(item.event.fingerprint, batch[first].event.fingerprint):
                    expected = built(outcomes[first])
                    assert outcome.replay
                else:
                    expected = reference.id_reused(ctx, item, processed_at)
            elif not replayable(item, row):
                expected = reference.id_reused(ctx, item, row.processed_at)
            elif row.outcome is not None:
                assert (outcome.key, outcome.value) == (row.outcome_key, row.outcome)
                continue  # a kept outcome's state record is the store's to refresh
            else:
                expected = reference.rebuilt(ctx, item, row)
            assert built(outcome) == expected
        for index in new:
            earlier[batch[index].key] = processed_row(
                ctx, batch[index], decisions.get(index), outcomes[index], processed_at
            )


@given(history=histories(), ctx=contexts, first_ctx=contexts, at=times, binary=st.booleans())
def test_every_outcome_kept_compact_is_rebuilt_as_before(
    history: list[TagEvent], ctx: OutcomeContext, first_ctx: OutcomeContext, at: datetime,
    binary: bool,
) -> None:  # fmt: skip
    """Each first outcome, its record, and its rebuild by a repeat in either content
    mode under another context: the decision's row and problem as the previous code
    made them, the rebuilt bytes as the previous code rebuilt them (and equal to the
    first)."""
    rows: dict[tuple[str, str], TagRecord] = {}
    for n, item in enumerate(_items(history, [False, True])):
        event = item.event
        assert isinstance(event, TagMoved | TagDeleted)
        before = rows.get((event.repository, event.tag))
        decision = decide(before, event)
        if (
            before is not None
            and decision.recorded is not None
            and (before.live or isinstance(event, TagDeleted))
        ):  # the row a move leaves over a tombstone is new: no replace there
            assert decision.recorded == reference.next_row(before, event)
        if isinstance(decision, Rejected) and decision.newer is not None:
            assert decision.problem == reference.superseded(event, decision.newer)
        first = invalid_or_decided(first_ctx, item, decision, at)
        row = processed_row(first_ctx, item, decision, first, at)
        again = Item(replace(item.record, offset=n + 1000), replace(event, binary=binary))
        if replayable(again, row) and row.outcome is None:
            rebuilt = replayed(ctx, again, row)
            assert built(rebuilt) == reference.rebuilt(ctx, again, row)
            assert (rebuilt.value, rebuilt.replay) == (first.value, True)
        if decision.recorded is not None:
            rows[(event.repository, event.tag)] = decision.recorded
        reuse = id_reused_outcome(ctx, again, at)
        assert built(reuse) == reference.id_reused(ctx, again, at)


def invalid_or_decided(
    ctx: OutcomeContext, item: Item, decision: Applied | Rejected, at: datetime
) -> Outcome:
    outcome = batch_outcomes(
        ctx, [item], new=[0], decisions={0: decision}, earlier={}, processed_at=at
    )
    assert built(outcome[0]) == reference.decided(ctx, item, decision, at)
    return outcome[0]


#: how a valid event is made invalid (422), or left valid
BREAKS: dict[str, dict[str, Any]] = {
    "valid": {},
    "artifact": {"artifact": "sha256:xyz"},
    "tag": {"tag": "-bad"},
    "expected_version beyond 64 bits (read as a float)": {"expected_version": 10**30},
    "expected_version negative": {"expected_version": -1},
    "previous_artifact": {"previous_artifact": "nope"},
    "actor": {"actor": 7},
}


def _record(body: dict[str, Any], binary: bool, timestamp_ms: int) -> RawRecord:
    if not binary:
        headers: tuple[tuple[str, bytes], ...] = (
            ("content-type", b"application/cloudevents+json"),
        )
        return RawRecord(
            "ocitag.events", 2, 5, timestamp_ms, None, json.dumps(body).encode(), headers
        )
    headers = tuple((f"ce_{k}", str(v).encode()) for k, v in body.items() if k != "data")
    headers += (("content-type", b"application/json"),)
    return RawRecord(
        "ocitag.events", 2, 5, timestamp_ms, None, json.dumps(body["data"]).encode(), headers
    )


@given(
    body=cloud_events(),
    broken=st.sampled_from(sorted(BREAKS)),
    deletion=st.booleans(),
    binary=st.booleans(),
    ctx=contexts,
    at=times,
    reason=texts,
    timestamp_ms=st.one_of(st.integers(-(2**63), 2**63 - 1), st.just(1_700_000_000_000)),
)
def test_decoded_events_valid_or_not_are_built_as_before(
    body: dict[str, Any], broken: str, deletion: bool, binary: bool, ctx: OutcomeContext,
    at: datetime, reason: str, timestamp_ms: int,
) -> None:  # fmt: skip
    """Real records read by ``decode``: a 422 for each broken rule, or a valid event's
    200 / 404 / 412 against no row; and the 500 of a refused one, timed by its record."""
    data: dict[str, Any] = body["data"]
    if deletion:
        body = {**body, "type": "ocitag.deleted.v1"}
        data = {k: v for k, v in data.items() if k != "artifact"}
    body["data"] = {**data, **BREAKS[broken]}
    record = _record(body, binary, timestamp_ms)
    event = decode(record, 65_536)
    if isinstance(event, Undecodable):  # a binary header the body spelled otherwise
        assert built(undecodable_outcome(ctx, record, event)) == reference.undecodable(
            ctx, record, event
        )
        return
    item = Item(record, event)
    if isinstance(event, Invalid):
        assert built(invalid_outcome(ctx, item, at)) == reference.decided(ctx, item, None, at)
    else:
        decision = decide(None, event)
        invalid_or_decided(ctx, item, decision, at)
    assert built(internal_outcome(ctx, item, reason)) == reference.internal(ctx, item, reason)


@given(
    value=st.one_of(
        st.none(), st.binary(max_size=200), cloud_events().map(json.dumps).map(str.encode)
    ),
    headers=st.lists(
        st.tuples(
            st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_subject", "content-type"]),
            st.binary(max_size=40),
        ),
        max_size=4,
    ),
    ctx=contexts,
    timestamp_ms=st.integers(-(2**63), 2**63 - 1),
)
def test_any_record_that_is_not_an_event_is_built_as_before(
    value: bytes | None, headers: list[tuple[str, bytes]], ctx: OutcomeContext, timestamp_ms: int
) -> None:
    record = RawRecord("ocitag.events", 0, 9, timestamp_ms, None, value, tuple(headers))
    event = decode(record, 65_536)
    if isinstance(event, Undecodable):
        assert built(undecodable_outcome(ctx, record, event)) == reference.undecodable(
            ctx, record, event
        )


@given(
    body=cloud_events(),
    kind=st.sampled_from([k for k in ProblemKind if k.published]),
    detail=texts,
    errors=st.lists(
        st.tuples(
            texts,
            texts,
            st.one_of(
                st.none(),
                texts,
                st.integers(-(2**80), 2**80),  # beyond 64 bits: the fallback serializer
                st.lists(st.integers(-(2**70), 2**70), max_size=3),
                st.dictionaries(texts, texts, max_size=3),
            ),
        ),
        max_size=3,
    ),
    ctx=contexts,
    at=times,
)
def test_any_problem_is_built_as_before(
    body: dict[str, Any], kind: ProblemKind, detail: str, errors: list[tuple[str, str, Any]],
    ctx: OutcomeContext, at: datetime,
) -> None:  # fmt: skip
    """Whatever a rejection says (any published kind, any offending values)."""
    event = decode(_record(body, False, 0), 65_536)
    assert isinstance(event, TagMoved)
    item = Item(_record(body, False, 0), event)
    problem = Problem(kind, detail, tuple(ErrorItem(*e) for e in errors))
    invalid_or_decided(ctx, item, Rejected(problem), at)
