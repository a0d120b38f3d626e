"""The watch's pure parts: SSE framing, resume ids, how a watch starts, the per-watcher
merge of snapshot, replay and live records, the slow-watcher policy and the limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.sse import parse
from worker.api import resume, sse
from worker.api.watchlimits import WatchLimits
from worker.api.watchrules import (
    Change,
    Cursor,
    Gap,
    Offer,
    Outbox,
    Plan,
    Start,
    change,
    start,
)

IDS = resume.EventIds(b"a test key")
offsets = st.lists(st.integers(min_value=0, max_value=2**63 - 1), min_size=1, max_size=64)


# ---- framing


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        (b'{"a":1}', ['{"a":1}']),
        (b"one\ntwo", ["one", "two"]),
        (b"one\r\ntwo\rthree", ["one", "two", "three"]),
        (b"", [""]),
        (b"trailing\n", ["trailing", ""]),
    ],
)
def test_an_event_is_one_data_line_per_line(data: bytes, lines: list[str]) -> None:
    frame = sse.event("upsert", data, "w1.MA")
    (event,) = parse(frame.decode())
    assert (event.name, event.id) == ("upsert", "w1.MA")
    assert event.data == "\n".join(lines)
    assert frame.endswith(b"\n\n")


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"])))
def test_any_payload_round_trips_modulo_line_breaks(text: str) -> None:
    (event,) = parse(sse.event("upsert", text.encode(), "x").decode())
    assert event.data == text.replace("\r\n", "\n").replace("\r", "\n")


def test_names_and_ids_cannot_break_the_stream() -> None:
    with pytest.raises(ValueError, match="line break"):
        sse.event("up\nsert", b"{}", "x")
    with pytest.raises(ValueError, match="line break"):
        sse.event("upsert", b"{}", "x\ny")
    assert sse.comment("a\nb") == b": a b\n\n"
    assert parse(sse.comment("heartbeat").decode()) == []


# ---- resume ids


@given(offsets, st.booleans())
def test_an_id_round_trips(positions: list[int], snapshot: bool) -> None:
    encoded = resume.encode(tuple(positions), snapshot=snapshot)
    assert resume.decode(encoded) == resume.Resume(tuple(positions), snapshot)
    assert "\n" not in encoded and "\r" not in encoded


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "w1.",
        "x1.MA",  # unknown prefix
        "w1.!!",  # not base64url
        "w1.MA==",  # padded: not our spelling
        "w1." + resume.encode_body("1,,2"),
        "w1." + resume.encode_body("01"),
        "w1." + resume.encode_body("-1"),
        "w1." + resume.encode_body(str(2**63)),
        "w1." + resume.encode_body("1 ,2"),
        "w1." + "A" * (resume.MAX_ID_CHARS + 1),
    ],
)
def test_an_id_we_did_not_give_is_none(text: str | None) -> None:
    assert resume.decode(text) is None


@given(st.text(max_size=40))
def test_decoding_never_raises(text: str) -> None:
    decoded = resume.decode(text)
    if decoded is not None:
        assert resume.decode(resume.encode(decoded.positions, snapshot=decoded.snapshot))


@given(offsets, st.booleans())
def test_a_sealed_id_round_trips_and_one_position_has_one_id(
    positions: list[int], snapshot: bool
) -> None:
    sealed = IDS.encode(tuple(positions), snapshot=snapshot)
    assert IDS.decode(sealed) == resume.Resume(tuple(positions), snapshot)
    assert IDS.encode(tuple(positions), snapshot=snapshot) == sealed  # shared frames
    assert sealed.startswith("e1.") and resume.decode(sealed) is None  # not a plain id


def test_a_sealed_id_hides_the_offsets_and_cannot_be_forged() -> None:
    sealed = IDS.encode((41, 7))
    body = sealed[3:]
    tampered = body[:-1] + ("A" if body[-1] != "A" else "B")
    assert resume.decode(sealed) is None  # not readable as a plain id
    for text in (
        resume.encode((41, 7)),  # a plain id (as ids were before sealing)
        "e1." + tampered,
        resume.EventIds(b"another key").encode((41, 7)),  # another deployment's tokens
        "e1.",
        "e1." + "A" * (resume.MAX_ID_CHARS + 1),
        None,
    ):
        assert IDS.decode(text) is None
    assert resume.EventIds.from_tokens("ci:t").decode(
        resume.EventIds.from_tokens("ci:t").encode((1,))
    ) == resume.Resume((1,), False)


@given(st.text(max_size=60))
def test_decoding_a_sealed_id_never_raises(text: str) -> None:
    assert IDS.decode("e1." + text) is None or text


# ---- how a watch starts


@pytest.mark.parametrize(
    ("last_id", "first", "end", "plan"),
    [
        (None, [0, 0], [5, 5], Plan(Start.SNAPSHOT)),
        ("garbage", [0, 0], [5, 5], Plan(Start.RESET, reason="unknown_id")),
        (
            IDS.encode((1, 1), snapshot=True),
            [0, 0],
            [5, 5],
            Plan(Start.RESET, reason="snapshot_interrupted"),
        ),
        (IDS.encode((1, 2)), [0, 0], [5, 5], Plan(Start.REPLAY, (1, 2))),
        (IDS.encode((5, 5)), [0, 0], [5, 5], Plan(Start.REPLAY, (5, 5))),
        (IDS.encode((1, 2)), [2, 0], [5, 5], Plan(Start.RESET, reason="expired")),
        (IDS.encode((1, 6)), [0, 0], [5, 5], Plan(Start.RESET, reason="topic_recreated")),
        (IDS.encode((1, 2, 3)), [0, 0], [5, 5], Plan(Start.RESET, reason="partitions_changed")),
        # a partition added since the id: read from its start
        (IDS.encode((4,)), [0, 3], [5, 9], Plan(Start.REPLAY, (4, 3))),
    ],
)
def test_how_a_watch_starts(
    last_id: str | None, first: list[int], end: list[int], plan: Plan
) -> None:
    assert start(last_id, first, end, IDS) == plan


# ---- the merge


def _c(partition: int, offset: int, key: str, version: int | None, *, value: bool = True) -> Change:
    body = f'{{"version":{version}}}'.encode() if value else None
    return change(
        partition, offset, key, value=body, version=version, after=(), ids=IDS, stale=False
    )


A, B, OTHER = "r.io/team/app:a", "r.io/team/app:b", "r.io/other/app:a"


@pytest.mark.parametrize(
    ("snapshot", "records", "sent"),
    [
        # the snapshot already holds v2: the queued v1 and v2 are skipped, v3 passes
        ({A: 2}, [_c(0, 0, A, 1), _c(0, 1, A, 2), _c(0, 2, A, 3)], [(A, 3)]),
        # a tag not in the snapshot (created after it was read, then deleted)
        ({}, [_c(0, 0, B, 1), _c(0, 1, B, 2, value=False)], [(B, 1), (B, 2)]),
        # out of scope and unreadable tags are left out, their offsets still pass
        ({}, [_c(0, 0, OTHER, 1), _c(0, 1, "r.io/team/app:secret", 1), _c(0, 2, A, 1)], [(A, 1)]),
        # an at-least-once repeat (same version) is sent once
        ({}, [_c(0, 0, A, 1), _c(1, 0, B, 1), _c(0, 1, A, 1)], [(A, 1), (B, 1)]),
        # a key that is not an OCITag ID is nobody's
        ({}, [_c(0, 0, "", 1), _c(0, 1, A, 1)], [(A, 1)]),
    ],
)
def test_what_a_watcher_passes_on(
    snapshot: dict[str, int], records: list[Change], sent: list[tuple[str, int]]
) -> None:
    cursor = Cursor([0, 0], IDS, "r.io/team/app", lambda tag: not tag.endswith(":secret"))
    for key, version in snapshot.items():
        cursor.snapshot_row(key, version)
    assert [(c.key, c.version) for c in records if cursor.admit(c)] == sent
    assert cursor.positions == [
        max((c.offset + 1 for c in records if c.partition == p), default=0) for p in (0, 1)
    ]


def test_settling_drops_the_snapshot_versions() -> None:
    cursor = Cursor([0], IDS)
    cursor.snapshot_row(A, 2)
    cursor.snapshot_row(B, 1)
    cursor.live = True
    assert not cursor.admit(_c(0, 0, A, 2))  # a late record of what the snapshot showed
    assert cursor.settle() == 2 and cursor.sent == {}
    assert cursor.admit(_c(0, 1, B, 2))


def test_records_before_the_resume_point_are_not_repeated() -> None:
    cursor = Cursor([2, 0], IDS)
    assert not cursor.admit(_c(0, 0, A, 1))
    assert not cursor.admit(_c(0, 1, A, 2))
    assert cursor.admit(_c(0, 2, A, 3))


@pytest.mark.parametrize(
    ("positions", "record", "reason"),
    [([2], _c(0, 4, A, 1), "compacted"), ([0], _c(0, 1, A, 1), "compacted")],
)
def test_a_missing_offset_is_a_gap(positions: list[int], record: Change, reason: str) -> None:
    with pytest.raises(Gap) as raised:
        Cursor(positions, IDS).admit(record)
    assert raised.value.reason == reason


def test_a_replay_that_ends_short_lost_its_last_records() -> None:
    cursor = Cursor([0, 3], IDS)
    cursor.admit(_c(0, 0, A, 1))
    cursor.end_of_replay([1, 3])
    with pytest.raises(Gap):
        cursor.end_of_replay([2, 3])


def test_live_watchers_forget_a_tag_once_a_newer_version_passed() -> None:
    cursor = Cursor([0], IDS)
    cursor.snapshot_row(A, 2)
    cursor.live = True
    assert not cursor.admit(_c(0, 0, A, 2))
    assert cursor.admit(_c(0, 1, A, 3))
    assert cursor.sent == {}
    stale = change(0, 2, A, value=b"{}", version=3, after=(), ids=IDS, stale=True)
    assert not cursor.admit(stale)


@given(
    st.lists(
        st.tuples(st.sampled_from([A, B, OTHER]), st.integers(1, 6), st.booleans()), max_size=60
    ),
    st.integers(0, 60),
)
def test_versions_only_grow_per_tag_and_no_record_is_sent_twice(
    stream: list[tuple[str, int, bool]], resume_at: int
) -> None:
    """A topic of at-least-once records (versions may repeat or come back lower as
    repeats); whatever the resume point, a watcher never sends a tag's version twice or
    a lower one after a higher, and sends every offset after the resume point at most
    once."""
    records = [_c(0, i, key, version, value=live) for i, (key, version, live) in enumerate(stream)]
    cursor = Cursor([min(resume_at, len(records))], IDS)
    last: dict[str, int] = {}
    for c in records:
        if cursor.admit(c):
            assert c.offset >= resume_at
            assert c.version is not None and c.version > last.get(c.key, 0)
            last[c.key] = c.version
    assert cursor.positions == [max(len(records), min(resume_at, len(records)))]


def test_an_aligned_watcher_uses_the_feeds_frame() -> None:
    c = change(0, 0, A, value=b"{}", version=1, after=(1, 0), ids=IDS)
    cursor = Cursor([0, 0], IDS)
    assert cursor.admit(c)
    assert cursor.aligned(c.after)
    assert parse(c.frame.decode())[0].id == cursor.event_id() == IDS.encode((1, 0))


def test_a_delete_says_the_tag_and_its_version() -> None:
    (event,) = parse(_c(0, 0, A, 7, value=False).framed("x").decode())
    assert (event.name, event.json) == ("delete", {"tag": A, "version": 7})


# ---- the slow-watcher policy


def test_an_outbox_past_its_limit_closes_and_stays_closed() -> None:
    outbox = Outbox(3)
    assert outbox.offer([_c(0, i, A, 1) for i in range(5)]) is Offer.QUEUED  # any one read
    outbox.take()
    assert outbox.offer([_c(0, 0, A, 1), _c(0, 1, A, 2)]) is Offer.QUEUED
    assert outbox.offer([_c(0, 2, A, 3), _c(0, 3, A, 4)]) is Offer.CUT
    assert outbox.closed == "too_slow"
    assert outbox.queued == 0
    assert outbox.offer([_c(0, 4, A, 5)]) is Offer.CUT


def test_a_catching_up_outbox_that_overflows_lets_go_instead_of_cutting() -> None:
    """While the watcher sends a snapshot or a replay, an overflow empties the queue
    (the watcher reads the span from the topic) and it is not cut off; it goes live
    only with nothing queued and nothing lost."""
    outbox = Outbox(3, catching_up=True)
    assert outbox.offer([_c(0, 0, A, 1), _c(0, 1, A, 2)]) is Offer.QUEUED
    assert not outbox.go_live()  # something queued
    assert outbox.offer([_c(0, 2, A, 3), _c(0, 3, A, 4)]) is Offer.LEFT
    assert (outbox.closed, outbox.queued, outbox.overflowed) == (None, 0, True)
    assert outbox.offer([_c(0, 4, A, 5)]) is Offer.LEFT  # stays let go
    assert not outbox.go_live()  # lost records: the watcher must replay them first
    fresh = Outbox(3, catching_up=True)
    fresh.offer([_c(0, 0, A, 1)])
    fresh.take()
    assert fresh.go_live() and not fresh.catching_up
    fresh.offer([_c(0, 1, A, 2), _c(0, 2, A, 3)])
    assert fresh.offer([_c(0, 3, A, 4), _c(0, 4, A, 5)]) is Offer.CUT


@given(st.lists(st.integers(1, 5), max_size=30), st.integers(1, 20))
def test_an_outbox_never_holds_more_than_its_limit(batches: list[int], limit: int) -> None:
    outbox = Outbox(limit)
    for size in batches:
        before = outbox.queued
        accepted = outbox.offer([_c(0, i, A, 1) for i in range(size)]) is Offer.QUEUED
        assert outbox.queued <= max(limit, size)
        assert accepted == (outbox.closed is None and (before == 0 or before + size <= limit))
        if not accepted:
            assert outbox.closed == "too_slow"
        if size % 2:
            outbox.take()


# ---- the limits


def test_watch_limits_per_process_and_per_caller() -> None:
    limits = WatchLimits(total=3, per_caller=2)
    assert limits.admit("a") is None
    assert limits.admit("a") is None
    assert "OCITAG_API_MAX_WATCHES_PER_CALLER" in (limits.admit("a") or "")
    assert limits.admit("b") is None
    assert "OCITAG_API_MAX_WATCHES" in (limits.admit("c") or "")
    limits.release("a")
    assert limits.admit("c") is None
    assert len(limits) == 3
