"""A watch's flow over fakes of the feed, the snapshot reads and the client: snapshot
then synced then live; resume without gaps or repeats; reset when the topic lost what
must be replayed; a watcher that stops reading is cut off and the others go on."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.helpers.sse import Event
from tests.helpers.watchfakes import FakeReads, FakeTopic, FakeWriter
from worker.api.feed import WRITE_BYTES
from worker.api.watch import CATCH_UP_ROUNDS, Cut, Scope, Watch, WatchOptions
from worker.api.watchrules import Batch, Shared

REPO = "r.io/team/app"
OPTIONS = WatchOptions(queue_events=50, heartbeat_seconds=5.0, snapshot_page=2)


def _allow(_: str) -> bool:
    return True


class Running:
    def __init__(self, watch: Watch, writer: FakeWriter, task: asyncio.Task[None]) -> None:
        self.watch, self.writer, self.task = watch, writer, task

    async def until(self, done: Callable[[list[Event]], bool]) -> list[Event]:
        async with asyncio.timeout(5):
            while not done(self.writer.events):
                self.writer.written.clear()
                await asyncio.sleep(0)
                if self.task.done():
                    self.task.result()
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.writer.written.wait(), 0.05)
        return self.writer.events


@contextlib.asynccontextmanager
async def watching(
    topic: FakeTopic,
    reads: FakeReads,
    last_id: str | None = None,
    *,
    repository: str | None = REPO,
    options: WatchOptions = OPTIONS,
    may_read: Callable[[str], bool] = _allow,
    reads_all: bool = False,
) -> AsyncIterator[Running]:
    writer = FakeWriter()
    fields: dict[str, Any] = {}
    scope = Scope(repository, may_read, reads_all)
    watch = Watch(writer, topic, reads, options=options, scope=scope, fields=fields)
    task = asyncio.create_task(watch.run(last_id))
    try:
        yield Running(watch, writer, task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _count(n: int) -> Callable[[list[Event]], bool]:
    return lambda events: len(events) == n


def synced(events: list[Event]) -> bool:
    return any(e.name == "synced" for e in events)


async def test_snapshot_in_pages_then_synced_then_live_changes() -> None:
    topic, reads = FakeTopic(), FakeReads()
    for tag in ("a", "b", "c"):
        reads.put(REPO, tag, 1)
    reads.put("r.io/other", "x", 1)
    async with watching(topic, reads) as w:
        events = await w.until(synced)
        assert [(e.name, e.json.get("tag"), e.json.get("version")) for e in events] == [
            ("upsert", "a", 1),
            ("upsert", "b", 1),
            ("upsert", "c", 1),
            ("synced", None, None),
        ]
        assert reads.pages == 2  # 2 + 1 rows
        assert {e.id for e in events[:3]} == {events[0].id}
        snapshot_id, synced_id = (topic.ids.decode(e.id) for e in (events[0], events[3]))
        assert snapshot_id is not None and snapshot_id.snapshot
        assert synced_id is not None and not synced_id.snapshot
        topic.append(0, f"{REPO}:a", 2)
        topic.append(1, "r.io/other:x", 2)
        topic.append(1, f"{REPO}:b", 2, live=False)
        topic.deliver()
        events = await w.until(lambda e: len(e) == 6)
        assert [(e.name, e.json["version"]) for e in events[4:]] == [("upsert", 2), ("delete", 2)]
        assert events[5].json == {"tag": f"{REPO}:b", "version": 2}


async def test_changes_during_the_snapshot_are_merged_by_version() -> None:
    """Records queued while the snapshot was read: those the snapshot already holds are
    skipped, newer ones follow it before ``synced``; nothing goes back."""
    topic, reads = FakeTopic(), FakeReads()
    reads.put(REPO, "a", 2)  # the snapshot reads v2 ...
    topic.append(0, f"{REPO}:a", 1)  # ... while v1, v2, v3 are on their way
    topic.append(0, f"{REPO}:a", 2)
    topic.append(0, f"{REPO}:a", 3)
    topic.append(0, f"{REPO}:new", 1)
    reads.on_page = topic.deliver  # the feed reads them while the snapshot is read
    async with watching(topic, reads) as w:
        events = await w.until(synced)
    versions = [
        (e.json["tag"].rpartition(":")[2], e.json["version"]) for e in events if e.name == "upsert"
    ]
    assert versions == [("a", 2), ("a", 3), ("new", 1)]


async def _run_to_synced(topic: FakeTopic, reads: FakeReads) -> str:
    async with watching(topic, reads) as w:
        await w.until(synced)
        topic.append(0, f"{REPO}:a", 1)
        topic.deliver()
        events = await w.until(lambda e: e[-1].name == "upsert")
        return events[-1].id or ""


async def test_resume_replays_every_change_after_the_id_and_nothing_before() -> None:
    topic, reads = FakeTopic(), FakeReads()
    last_id = await _run_to_synced(topic, reads)
    # while away: more changes, read by the feed before the client comes back
    topic.append(0, f"{REPO}:a", 2)
    topic.append(1, f"{REPO}:b", 1)
    topic.append(1, "r.io/other:z", 1)
    topic.deliver()
    async with watching(topic, reads, last_id) as w:
        events = await w.until(lambda e: len(e) >= 2)
        topic.append(0, f"{REPO}:a", 3)
        topic.deliver()
        events = await w.until(lambda e: len(e) >= 3)
    assert [(e.json["tag"], e.json["version"]) for e in events] == [
        (f"{REPO}:a", 2),
        (f"{REPO}:b", 1),
        (f"{REPO}:a", 3),
    ]
    assert topic.replays == 1 and reads.pages == 1  # no second snapshot


async def test_resume_ids_are_exact_after_every_event() -> None:
    """Resuming from any event's id sends exactly the events after it."""
    topic, reads = FakeTopic(), FakeReads()
    first = await _run_to_synced(topic, reads)
    for v in range(2, 6):
        topic.append(v % 2, f"{REPO}:t{v}", v)
    topic.deliver()
    async with watching(topic, reads, first) as w:
        full = await w.until(lambda e: len(e) == 4)
    for i, event in enumerate(full):
        async with watching(topic, reads, event.id) as w:
            await w.until(_count(3 - i))
            await asyncio.sleep(0.01)
            assert [e.data for e in w.writer.events] == [e.data for e in full[i + 1 :]]


@pytest.mark.parametrize("damage", ["compacted", "expired"])
async def test_a_resume_point_the_topic_lost_gives_reset_and_a_fresh_snapshot(damage: str) -> None:
    topic, reads = FakeTopic(), FakeReads()
    last_id = await _run_to_synced(topic, reads)
    topic.append(0, f"{REPO}:a", 2)
    topic.append(0, f"{REPO}:a", 3)
    topic.deliver()
    if damage == "compacted":
        topic.compact(0, {1})  # v2 is gone: v3 alone would skip a version
    else:
        topic.start_offsets[0] = 2
    reads.put(REPO, "a", 3)
    async with watching(topic, reads, last_id) as w:
        events = await w.until(synced)
    assert [e.name for e in events] == ["reset", "upsert", "synced"]
    assert events[1].json["version"] == 3
    assert w.watch._fields["reset"] == damage


async def test_an_id_from_an_unfinished_snapshot_starts_over() -> None:
    topic, reads = FakeTopic(), FakeReads()
    reads.put(REPO, "a", 1)
    async with watching(topic, reads) as w:
        snapshot_id = (await w.until(synced))[0].id
    async with watching(topic, reads, snapshot_id) as w:
        assert [e.name for e in await w.until(synced)] == ["reset", "upsert", "synced"]


async def test_a_watcher_that_stops_reading_is_cut_off_and_the_others_go_on() -> None:
    topic, reads = FakeTopic(partitions=1), FakeReads()
    options = WatchOptions(queue_events=10, heartbeat_seconds=5.0, snapshot_page=100)
    async with (
        watching(topic, reads, options=options) as slow,
        watching(topic, reads, options=options) as fast,
    ):
        await slow.until(synced)
        await fast.until(synced)
        slow.writer.stuck = True
        for round_ in range(4):
            for i in range(5):
                topic.append(0, f"{REPO}:t{i}", round_ + 1)
            topic.deliver()
            await fast.until(_count(1 + 5 * (round_ + 1)))
        async with asyncio.timeout(2):
            await slow.watch.cut.wait()
        assert slow.watch.subscription.outbox.closed == "too_slow"
        assert len(topic.fanout) == 1
        assert not fast.task.done()
        # a watcher cut off while not stuck learns it at its next turn
        slow.writer.stuck = False
        slow.task.cancel()
    topic2, reads2 = FakeTopic(partitions=1), FakeReads()
    async with watching(topic2, reads2, options=options) as lagging:
        await lagging.until(synced)
        lagging.watch.subscription.cut("too_slow")
        with pytest.raises(Cut):
            await asyncio.wait_for(lagging.task, 2)


async def test_grants_filter_the_snapshot_and_the_changes() -> None:
    topic, reads = FakeTopic(), FakeReads()
    reads.put(REPO, "open", 1)
    reads.put(REPO, "secret", 1)
    async with watching(topic, reads, may_read=lambda tag: not tag.endswith(":secret")) as w:
        await w.until(synced)
        topic.append(0, f"{REPO}:secret", 2)
        topic.append(0, f"{REPO}:open", 2)
        topic.deliver()
        events = await w.until(lambda e: len(e) == 3)
    assert [e.json.get("tag") for e in events] == ["open", None, f"{REPO}:open"]


async def test_idle_watches_get_a_comment_line_every_heartbeat() -> None:
    topic, reads = FakeTopic(), FakeReads()
    options = WatchOptions(queue_events=10, heartbeat_seconds=0.05, snapshot_page=10)
    async with watching(topic, reads, options=options) as w:
        await w.until(synced)
        await asyncio.sleep(0.3)
    assert w.writer.data.count(b": heartbeat\n\n") >= 3


async def test_a_large_read_is_written_in_bounded_pieces() -> None:
    topic, reads = FakeTopic(partitions=1), FakeReads()
    options = WatchOptions(queue_events=10, heartbeat_seconds=5.0, snapshot_page=10)
    async with watching(topic, reads, options=options) as w:
        await w.until(synced)
        for i in range(2_000):  # one read of the feed, far past the queue's limit
            topic.append(0, f"{REPO}:tag-with-a-longer-name-{i:05}", 1)
        topic.deliver()
        events = await w.until(_count(2_001))
    assert len(events) == 2_001
    assert len(w.writer.sizes) > 2
    assert max(w.writer.sizes[1:]) < WRITE_BYTES + 1_000


def _folded(events: list[Event]) -> dict[str, int]:
    """The client's map (tag → version) after the events; asserts versions only grow."""
    held: dict[str, int] = {}
    for e in events:
        if e.name in ("upsert", "delete"):
            tag = e.json["tag"]
            key = tag if ":" in tag else f"{e.json['repository']}:{tag}"
            assert e.json["version"] > held.get(key, 0), f"{key} went back or repeated"
            held[key] = e.json["version"]
    return held


class Load:
    """Changes flowing: each call writes ``per_call`` moves of tags t0… and the feed reads
    them; ``truth`` is each tag's last version."""

    def __init__(self, topic: FakeTopic, per_call: int, calls: int = 1_000) -> None:
        self.topic, self.per_call, self.truth = topic, per_call, dict[str, int]()
        self.calls = calls  # at most this many (the load ends)

    def __call__(self) -> None:
        if not self.calls:
            return
        self.calls -= 1
        for _ in range(self.per_call):
            key = f"{REPO}:t{len(self.truth) % 7}-{sum(self.truth.values()) % 5}"
            self.truth[key] = self.truth.get(key, 0) + 1
            self.topic.append(zlib.crc32(key.encode()) % len(self.topic.log), key, self.truth[key])
        self.topic.deliver()


async def test_a_big_snapshot_under_load_is_not_cut_off_and_misses_nothing() -> None:
    """Changes keep flowing while a snapshot of many tags is written: far more than the
    queue holds. The watcher is let go by the feed, reads what it missed from the topic,
    and ends live with every change; a live watcher alongside is not slowed."""
    topic, reads = FakeTopic(), FakeReads()
    for i in range(400):
        reads.put(REPO, f"s{i:03}", 1)
    options = WatchOptions(queue_events=10, heartbeat_seconds=5.0, snapshot_page=20)
    async with watching(topic, reads, options=options) as other:
        await other.until(synced)
        load = Load(topic, per_call=6)
        reads.on_page = load  # 20 pages x 6 changes: 120 changes, queue of 10
        async with watching(topic, reads, options=options) as w:
            await w.until(synced)
            load()
            want = {**{f"{REPO}:s{i:03}": 1 for i in range(400)}, **load.truth}
            await w.until(lambda e: _folded(e) == want)
            assert not w.task.done() and w.watch.subscription.outbox.closed is None
            assert topic.replays >= 1  # caught up from the topic, not from memory
            assert len(topic.fanout) == 2
            assert w.watch._fields["replays"] == topic.replays
        await other.until(lambda e: _folded(e) == want)


async def test_a_replay_under_load_catches_up_and_goes_live() -> None:
    topic, reads = FakeTopic(), FakeReads()
    options = WatchOptions(queue_events=10, heartbeat_seconds=5.0, snapshot_page=20)
    last_id = await _run_to_synced(topic, reads)
    load = Load(topic, per_call=8, calls=40)
    for _ in range(10):
        load()  # 80 changes while away
    topic.replay_chunk, topic.on_replay = 5, load  # 240 more arrive as the replay is read
    async with watching(topic, reads, last_id, options=options) as w:
        events = await w.until(lambda e: load.calls == 0 and _folded(e) == load.truth)
        load.calls = 1
        load()  # and one live
        events = await w.until(lambda e: _folded(e) == load.truth)
    assert not any(e.name in ("reset", "synced") for e in events)
    assert topic.replays >= 2 and w.watch.subscription.outbox.closed is None


async def test_heartbeats_go_on_while_a_long_snapshot_and_a_replay_are_written() -> None:
    topic, reads = FakeTopic(), FakeReads()
    for i in range(6):
        reads.put(REPO, f"s{i:02}", 1)
    reads.delay = 0.08  # 4 pages: 0.32 s of snapshot, heartbeat every 0.05 s
    options = WatchOptions(queue_events=10, heartbeat_seconds=0.05, snapshot_page=2)
    async with watching(topic, reads, options=options) as w:
        await w.until(synced)
        before_synced = w.writer.data.split(b"event: synced")[0]
        topic.append(0, f"{REPO}:s00", 2)
        topic.deliver()
        last_id = (await w.until(lambda e: e[-1].name == "upsert"))[-1].id
    assert before_synced.count(b": heartbeat\n\n") >= 2
    for i in range(8):
        topic.append(i % 2, f"{REPO}:r{i}", 1)
    topic.deliver()
    topic.replay_chunk, topic.replay_delay = 2, 0.08  # 4 batches: 0.32 s of replay
    async with watching(topic, reads, last_id, options=options) as w:
        await w.until(lambda e: len(e) == 8)
    assert w.writer.data.count(b": heartbeat\n\n") >= 2


def _with_rows(n: int, version: int) -> tuple[FakeTopic, FakeReads]:
    reads = FakeReads()
    for i in range(n):
        reads.put(REPO, f"s{i}", version)
    return FakeTopic(), reads


async def test_a_client_that_stops_reading_during_the_snapshot_is_cut_off() -> None:
    topic, reads = _with_rows(10, 1)
    options = WatchOptions(10, heartbeat_seconds=5.0, snapshot_page=2, stall_seconds=0.1)
    async with watching(topic, reads, options=options) as other:
        await other.until(synced)
        async with watching(topic, reads, options=options) as stuck:
            stuck.writer.stuck = True
            with pytest.raises(Cut) as raised:
                await asyncio.wait_for(stuck.task, 2)
        assert raised.value.reason == "too_slow" and stuck.watch._fields["stalled"]
        topic.append(0, f"{REPO}:s0", 2)
        topic.deliver()
        await other.until(lambda e: e[-1].name == "upsert")


async def test_the_snapshot_versions_are_dropped_once_the_watch_settled() -> None:
    topic, reads = _with_rows(50, 3)
    options = WatchOptions(10, heartbeat_seconds=5.0, snapshot_page=100, settle_seconds=0.05)
    async with watching(topic, reads, options=options) as w:
        await w.until(synced)
        topic.append(0, f"{REPO}:s0", 3)  # a late record of a version the client holds
        topic.deliver()
        async with asyncio.timeout(2):
            while "settled_versions" not in w.watch._fields:
                await asyncio.sleep(0.01)
        assert w.watch._fields["settled_versions"] == 50
        topic.append(0, f"{REPO}:s1", 4)
        topic.deliver()
        events = await w.until(lambda e: e[-1].name == "upsert")
    assert [e.json["version"] for e in events[51:]] == [4]


async def test_a_watcher_slower_than_the_changes_cannot_catch_up_for_ever() -> None:
    """Each catch-up read brings more changes than it passes on (the client is slower
    than the changes): after CATCH_UP_ROUNDS it is cut off, not left holding a replay."""
    topic, reads = FakeTopic(), FakeReads()
    last_id = await _run_to_synced(topic, reads)
    load = Load(topic, per_call=6)
    for _ in range(3):
        load()
    topic.replay_chunk, topic.on_replay = 5, load  # 6 new for every 5 read
    options = WatchOptions(queue_events=10, heartbeat_seconds=5.0, snapshot_page=20)
    async with watching(topic, reads, last_id, options=options) as w:
        with pytest.raises(Cut) as raised:
            await asyncio.wait_for(w.task, 5)
    assert raised.value.reason == "too_slow"
    assert w.watch._fields["catch_ups"] == CATCH_UP_ROUNDS


async def test_a_catch_up_that_meets_a_compacted_record_resets() -> None:
    """The span a snapshot's catch-up reads from the topic lost a record (compaction):
    ``reset`` and a fresh snapshot, not a failed watch."""
    topic, reads = FakeTopic(partitions=1), FakeReads()
    for i in range(4):
        reads.put(REPO, f"s{i}", 1)
    load = Load(topic, per_call=12)

    def flow_then_compact() -> None:
        load()
        if reads.pages == 1:  # the queue (10) overflows; then the cleaner takes one
            topic.compact(0, {3})

    reads.on_page = flow_then_compact
    options = WatchOptions(queue_events=10, heartbeat_seconds=5.0, snapshot_page=2)
    async with watching(topic, reads, options=options) as w:
        events = await w.until(synced)
        assert not w.task.done()
    assert [e.name for e in events].count("reset") == 1
    assert w.watch._fields["reset"] == "compacted"


async def test_watchers_of_everything_write_each_read_joined_once_with_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fan-out's fast path (no grants, every repository, live, nothing held back)
    writes exactly what the record-by-record path writes: repeats left out, deletes,
    several partitions, reads larger than one write."""
    joined: list[int] = []
    shared = Batch.shared

    def counting(batch: Batch) -> Shared:
        joined.append(id(batch))
        return shared(batch)

    monkeypatch.setattr(Batch, "shared", counting)
    topic, reads = FakeTopic(), FakeReads()
    options = WatchOptions(queue_events=10_000, heartbeat_seconds=5.0, snapshot_page=10)
    async with (
        watching(topic, reads, repository=None, options=options, reads_all=True) as fast,
        watching(topic, reads, repository=None, options=options) as slow,
    ):
        await fast.until(synced)
        await slow.until(synced)
        for round_ in range(3):
            for i in range(700):
                topic.append(i % 2, f"{REPO}:tag-with-a-longer-name-{i:04}", round_ + 1)
            topic.append(0, f"{REPO}:tag-with-a-longer-name-0000", round_ + 1)  # a repeat
            topic.append(1, f"r.io/other:x{round_}", round_ + 1, live=round_ != 1)
            topic.deliver()
        want = 3 * 701 + 1
        await fast.until(_count(want))
        await slow.until(_count(want))
    assert fast.writer.data == slow.writer.data
    assert len(set(joined)) == 3  # once per read, not per watcher
    assert max(fast.writer.sizes[1:]) < WRITE_BYTES + 1_000


async def test_a_hole_in_the_live_feed_is_a_gap_for_the_fast_path_too() -> None:
    topic, reads = FakeTopic(partitions=1), FakeReads()
    async with watching(topic, reads, repository=None, reads_all=True) as w:
        await w.until(synced)
        for v in (1, 2, 3):
            topic.append(0, f"{REPO}:a", v)
        topic.compact(0, {1})  # the cleaner removed v2 before the feed read it
        reads.put(REPO, "a", 3)
        topic.deliver()
        events = await w.until(_count(4))
    assert [e.name for e in events] == ["synced", "reset", "upsert", "synced"]
    assert w.watch._fields["reset"] == "compacted"
