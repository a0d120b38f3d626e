"""worker/history.py, pure: release-tag globs, the repointed decision (table-driven, then
against the reference model over generated histories), entries, the compact storage
form, and the digest question's intervals against the model's brute force."""

from __future__ import annotations

import fnmatch
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.history import replay_intervals
from tests.helpers.model import Model
from tests.helpers.strategies import BASE, digest, digests, histories, make_deletion, make_event
from worker.decision import Applied, TagRecord, fold
from worker.events import TagEvent
from worker.history import (
    DEFAULT_IMMUTABLE,
    Entry,
    ImmutableTags,
    NameMemory,
    applied_columns,
    artifact_bytes,
    artifact_text,
    change_code,
    change_of,
    entry_of,
    event_id_bytes,
    event_id_text,
    intervals,
    name_ref,
    repointed,
    stored_columns,
)
from worker.identifiers import normalize_digest

T = [BASE + timedelta(seconds=n) for n in range(6)]


@pytest.mark.parametrize(
    ("tag", "release"),
    [
        ("v1.4.2", True),
        ("1.4.2", True),
        ("v10.0.0-rc1", True),  # a glob: anything after the third number
        ("1.2.3.4", True),
        ("v1.4", False),
        ("latest", False),
        ("prod", False),
        ("V1.4.2", False),  # case-sensitive
        ("release-1.2.3", False),
    ],
)
def test_the_default_release_globs(tag: str, release: bool) -> None:
    assert (tag in DEFAULT_IMMUTABLE) is release


@given(
    st.text("v1.*?[]!-a", max_size=8),
    st.lists(st.text("v1.*?[]!-a", min_size=1, max_size=6), max_size=3),
)
def test_the_globs_match_as_fnmatch_does(tag: str, globs: list[str]) -> None:
    """One expression for all the globs: a tag is in them as ``fnmatchcase`` says."""
    expected = any(fnmatch.fnmatchcase(tag, glob) for glob in globs)
    assert (tag in ImmutableTags(tuple(globs))) is expected


def test_the_setting_is_comma_separated_and_empty_disables() -> None:
    assert ImmutableTags.parse(" v*, stable ,").globs == ("v*", "stable")
    assert "v1" not in ImmutableTags.parse("")
    assert ImmutableTags.parse("").globs == ()


def _moves(tag: str, *steps: str | None) -> list[Applied]:
    """The applied decisions of moves (an artifact) and deletions (None), in order."""
    events: list[TagEvent] = [
        make_deletion(tag, T[n], event_id=f"e{n}")
        if step is None
        else make_event(tag, step, T[n], event_id=f"e{n}")
        for n, step in enumerate(steps)
    ]
    _, decisions = fold(None, events)
    return [d for d in decisions if isinstance(d, Applied)]


@pytest.mark.parametrize(
    ("tag", "steps", "flags"),
    [
        ("v1.4.2", [digest(1), digest(2)], [False, True]),  # moved elsewhere
        ("v1.4.2", [digest(1), digest(1)], [False, False]),  # pushed again, same
        ("v1.4.2", [digest(1), None, digest(2)], [False, False, True]),  # re-created elsewhere
        ("v1.4.2", [digest(1), None, digest(1)], [False, False, False]),  # re-created, same
        ("v1.4.2", [digest(1), digest(2), digest(1)], [False, True, True]),  # back again
        ("latest", [digest(1), digest(2)], [False, False]),  # not a release tag
        ("v1.4", [digest(1), digest(2)], [False, False]),
    ],
)
def test_repointed(tag: str, steps: list[str | None], flags: list[bool]) -> None:
    applied = _moves(tag, *steps)
    assert [repointed(a, DEFAULT_IMMUTABLE) for a in applied] == flags
    assert not any(repointed(a, ImmutableTags(())) for a in applied)  # setting emptied


def test_a_deletion_of_a_never_seen_tag_then_a_creation_is_not_repointed() -> None:
    events: list[TagEvent] = [
        make_deletion("v1.0.0", T[0], event_id="d"),  # 404: a tombstone without artifact
        make_event("v1.0.0", digest(1), T[1], event_id="m"),
    ]
    _, decisions = fold(None, events)
    (applied,) = [d for d in decisions if isinstance(d, Applied)]
    assert applied.change == "created" and not repointed(applied, DEFAULT_IMMUTABLE)


@given(history=histories(max_events=40))
def test_replaced_is_the_models_artifact_before_a_move_elsewhere(history: list[TagEvent]) -> None:
    """``Applied.replaced`` (what repointed rests on) is, event by event, the artifact the
    reference model's tag pointed at before a move that points it elsewhere, also across
    a deletion."""
    model, stored = Model(), dict[tuple[str, str], TagRecord]()
    seen: set[tuple[str, str]] = set()
    for event in history:
        model.deliver(event)
        if (event.source, event.id) in seen:  # a replay or an id reused: never decided
            continue
        seen.add((event.source, event.id))
        key = (event.repository, event.tag)
        after, (decision,) = fold(stored.get(key), [event])
        if after is not None:
            stored[key] = after
        if isinstance(decision, Applied):
            change = model.changes[key][-1]
            assert change.event == event
            assert decision.replaced == change.replaced


def test_an_entry_is_the_changed_record_or_for_a_deletion_what_it_removed() -> None:
    created, deleted = _moves("v2.0.0", digest(1), None)
    entry = entry_of(created, DEFAULT_IMMUTABLE, T[5])
    assert (entry.version, entry.change, entry.artifact, entry.by, entry.at) == (
        1,
        "created",
        digest(1),
        "alice",
        T[0],
    )
    gone = entry_of(deleted, DEFAULT_IMMUTABLE, T[5])
    assert (gone.version, gone.change, gone.artifact, gone.at, gone.event_id) == (
        2,
        "deleted",
        digest(1),
        T[1],
        "e1",
    )


@given(artifact=digests)
def test_artifacts_are_stored_as_raw_digests_and_come_back_in_the_seeds_form(
    artifact: str,
) -> None:
    stored = normalize_digest(artifact)
    raw = artifact_bytes(stored)
    assert len(raw) in (32, 64)
    assert artifact_text(raw) == stored


def test_stored_columns_send_each_unknown_name_once() -> None:
    entry = Entry(1, "created", digest(1), "alice", T[0], T[1], "s", "e", False)
    rows = [("docker.io/library/app:a", entry), ("docker.io/library/app:b", entry)]
    known = NameMemory(10)
    known.remember({"s": name_ref("s")})
    columns = stored_columns(rows, known)
    assert sorted(columns.names) == ["alice", "docker.io/library/app:a", "docker.io/library/app:b"]
    assert columns.columns[1] == [
        name_ref("docker.io/library/app:a"),
        name_ref("docker.io/library/app:b"),
    ]
    assert columns.columns[6] == [bytes.fromhex(digest(1))] * 2
    assert columns.columns[5] == [1, 1] and columns.columns[7] == [b"e", b"e"]
    assert columns.name_refs == [name_ref(n) for n in columns.names]
    # tag, actor, source of each entry, in order, once each
    assert stored_columns(rows).names == [*columns.names[:2], "s", *columns.names[2:]]


@given(history=histories(max_events=40), known=st.sets(st.sampled_from(["alice", "bob", "s"])))
def test_the_stores_columns_are_those_of_the_entries(
    history: list[TagEvent], known: set[str]
) -> None:
    """``applied_columns`` (the store's path, no entries built) equals ``stored_columns``
    of ``entry_of`` of the same decisions: the same arrays, the same names sent."""
    stored: dict[tuple[str, str], TagRecord] = {}
    applied: list[Applied] = []
    for event in history:
        key = (event.repository, event.tag)
        after, (decision,) = fold(stored.get(key), [event])
        if after is not None:
            stored[key] = after
        if isinstance(decision, Applied):
            applied.append(decision)
    memory = NameMemory(100)
    memory.remember({name: name_ref(name) for name in known})
    immutable = ImmutableTags.parse("a,b")  # the histories' tags are a, b, c
    fast = applied_columns(applied, immutable, memory)
    rows = [
        (f"{d.record.repository}:{d.record.tag}", entry_of(d, immutable, T[0])) for d in applied
    ]
    slow = stored_columns(rows, memory)
    assert fast.entries == slow.entries and fast.columns == slow.columns
    assert fast.new_names == slow.new_names
    assert not set(fast.new_names) & known


def test_the_name_memory_is_bounded_and_keeps_the_names_in_use() -> None:
    memory = NameMemory(4)
    memory.remember({"a": 1, "b": 2})  # the young generation is full: it becomes the old
    assert (memory.get("a"), memory.get("b"), memory.get("c")) == (1, 2, None)
    memory.remember({"c": 3})  # a, b were used: copied to the young, which turns over
    memory.remember({"d": 4, "e": 5})
    assert len(memory) <= 4
    assert memory.get("d") == 4 and memory.get("e") == 5
    assert memory.get("c") is None  # unused for a generation: forgotten (sent again)


def test_the_name_memory_forgets_everything_when_told() -> None:
    memory = NameMemory(4)
    memory.remember({"a": 1})
    memory.remember({"b": 2, "c": 3})
    memory.forget()
    assert (len(memory), memory.get("a"), memory.get("b")) == (0, None, None)


@given(
    st.lists(
        st.tuples(st.booleans(), st.sets(st.sampled_from("abcdefghij"), max_size=4)),
        max_size=30,
    ),
    st.integers(1, 8),
)
def test_the_name_memory_answers_only_what_it_was_told(
    steps: list[tuple[bool, set[str]]], limit: int
) -> None:
    memory, told = NameMemory(limit), set[str]()
    for remember, names in steps:
        if remember:
            memory.remember({n: name_ref(n) for n in names})
            told |= names
        for name in names:
            assert memory.get(name) in ({name_ref(name), None} if name in told else {None})
        # the young generation stays under half the limit, the old one under half plus
        # one batch's names (a batch goes in whole): hits fill the young one too
        assert len(memory) <= limit + 4


@pytest.mark.parametrize(
    ("event_id", "stored"),
    [
        ("0f8fad5b-d9cb-469f-a165-70867728950e", bytes.fromhex("0f8fad5bd9cb469fa16570867728950e")),
        ("0F8FAD5B-D9CB-469F-A165-70867728950E", b"0F8FAD5B-D9CB-469F-A165-70867728950E"),
        ("0f8fad5bd9cb469fa16570867728950e", b"0f8fad5bd9cb469fa16570867728950e"),
        ("sixteen-bytes-id", b"\x00sixteen-bytes-id"),  # 16 bytes of text: not a UUID
        ("e42", b"e42"),
        ("", b""),
    ],
)
def test_event_ids_are_stored_compactly_and_unambiguously(event_id: str, stored: bytes) -> None:
    assert event_id_bytes(event_id) == stored
    assert event_id_text(stored) == event_id


@given(st.uuids().map(str) | st.text(st.characters(codec="utf-8", blacklist_characters="\x00")))
def test_every_event_id_comes_back(event_id: str) -> None:
    assert event_id_text(event_id_bytes(event_id)) == event_id


@given(st.sampled_from(["baseline", "created", "updated", "unchanged", "deleted"]), st.booleans())
def test_the_change_and_its_flag_share_one_smallint(change: str, flag: bool) -> None:
    code = change_code(change, flag)  # type: ignore[arg-type]
    assert 0 <= code < 2**15 and change_of(code) == (change, flag)


@given(history=histories(max_events=40))
def test_intervals_equal_the_brute_force_of_the_model(history: list[TagEvent]) -> None:
    """The digest question's intervals from one tag's entries are those of walking the
    model's applied events."""
    model = Model()
    for event in history:
        model.deliver(event)
    for n in range(4):
        found = []
        for (repository, tag), changes in model.changes.items():
            entries = [
                Entry(
                    c.summary.version or 0,
                    c.summary.change,  # type: ignore[arg-type]
                    c.summary.artifact or "",
                    c.event.actor,
                    c.event.time,
                    c.event.time,
                    c.event.source,
                    c.event.id,
                    False,
                )
                for c in changes
            ]
            found += [
                {
                    "tag": i.tag,
                    "from": i.start,
                    "until": i.until,
                    "from_version": i.from_version,
                }
                for i in intervals(f"{repository}:{tag}", entries)
                if i.artifact == digest(n)
            ]
        want = replay_intervals(model, digest(n), history=True)
        assert [
            (i["tag"], i["from_version"], i["until"] is None)
            for i in sorted(found, key=lambda i: (i["tag"], i["from_version"]))
        ] == [(i["tag"], i["from_version"], i["until"] is None) for i in want]
