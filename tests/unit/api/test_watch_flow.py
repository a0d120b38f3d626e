"""A watch's flow over fakes of the feed, the snapshot reads and the client: snapshot
then synced then live; resume without gaps or repeats; reset when the topic lost what
must be replayed; a watcher that stops reading is cut off and the others go on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.helpers.sse import Event
from tests.helpers.watchfakes import FakeReads, FakeTopic, FakeWriter
from worker.api.watch import WRITE_BYTES, Cut, Scope, Watch, WatchOptions

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
) -> AsyncIterator[Running]:
    writer = FakeWriter()
    fields: dict[str, Any] = {}
    watch = Watch(
        writer, topic, reads, options=options, scope=Scope(repository, may_read), fields=fields
    )
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
        assert {e.id for e in events[:3]} == {events[0].id} and (events[0].id or "").startswith(
            "s1."
        )
        assert (events[3].id or "").startswith("w1.")
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
