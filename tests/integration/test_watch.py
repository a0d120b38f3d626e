"""The watch (docs/subscribers.md "Watch") against the running worker and api on real
Kafka and PostgreSQL: the snapshot is live_ocitags in scope, every applied change comes
once per watcher in version order, Last-Event-ID resumes without gaps or repeats (across
an api restart too), a resume point the topic no longer holds gives ``reset``, a watcher
that stops reading is cut off while the others keep up, limits answer 429, and curl
follows a watch."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from tests.helpers.api import (
    DIGEST_A,
    DIGEST_B,
    OTHER_TOKEN,
    TOKEN,
    ApiClient,
    api_overrides,
    running_api,
)
from tests.helpers.harness import running_worker
from tests.helpers.registry import free_port
from tests.helpers.sse import Event, events_of
from tests.helpers.state import live_ocitags
from tests.helpers.watch import Watcher, watch_url, watching
from worker import metrics
from worker.api.listener import topic_partitions
from worker.kafka import ensure_topics
from worker.settings import Settings

pytestmark = pytest.mark.integration
R, OTHER = "registry.example.com/team/app", "registry.example.com/other/app"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        **api_overrides(api_watch_heartbeat_seconds=1.0, api_max_watches_per_caller=6)
    )


async def live(database_url: str, repository: str | None) -> dict[str, int]:
    """``live_ocitags`` in scope: OCITag ID → version."""
    rows = await live_ocitags(database_url)
    return {k: r["version"] for k, r in rows.items() if repository in (None, r["repository"])}


def held(events: list[Event]) -> dict[str, int]:
    """What a client holds after applying the events (upsert/delete, reset clears)."""
    state: dict[str, int] = {}
    for e in events:
        if e.name == "reset":
            state.clear()
        elif e.name == "upsert":
            state[f"{e.json['repository']}:{e.json['tag']}"] = e.json["version"]
        elif e.name == "delete":
            state.pop(e.json["tag"], None)
    return state


def versions(events: list[Event]) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = defaultdict(list)
    for e in events:
        if e.name == "upsert":
            seen[f"{e.json['repository']}:{e.json['tag']}"].append(e.json["version"])
        elif e.name == "delete":
            seen[e.json["tag"]].append(e.json["version"])
    return dict(seen)


async def change(api: ApiClient, tag: str, rng: random.Random) -> tuple[str, int] | None:
    """A random move or deletion through the api; the applied version, if applied."""
    if rng.random() < 0.25:
        answer = await api.delete(tag)
    else:
        answer = await api.put(tag, {"artifact": rng.choice([DIGEST_A, DIGEST_B])})
    if answer.status != 200:
        return None
    return tag, int(answer.headers["ETag"].strip('"'))


async def changes(api: ApiClient, tags: list[str], count: int, seed: int) -> dict[str, list[int]]:
    """``count`` random changes, each tag's in sequence (the tags concurrently)."""
    rng = random.Random(seed)
    plan: dict[str, int] = defaultdict(int)
    for _ in range(count):
        plan[rng.choice(tags)] += 1

    async def one_tag(tag: str, n: int) -> list[int]:
        applied = [await change(api, tag, rng) for _ in range(n)]
        return [a[1] for a in applied if a is not None]

    done = await asyncio.gather(*(one_tag(t, n) for t, n in plan.items()))
    return {t: v for t, v in zip(plan, done, strict=True) if v}


def _has_changes(w: Watcher, n: int) -> Callable[[list[Event]], bool]:
    return lambda _: len(w.changes()) >= n


def count_of(expected: dict[str, list[int]]) -> int:
    return sum(map(len, expected.values()))


async def test_snapshot_then_every_change_once_per_watcher_in_version_order(
    settings: Settings, database_url: str
) -> None:
    async with running_worker(settings), running_api(settings, watch=True) as api:
        await changes(api, [f"{R}:s{i}" for i in range(6)] + [f"{OTHER}:x"], 12, seed=1)
        async with watching(api, R) as one, watching(api, R) as two, watching(api) as every:
            for w in (one, two, every):
                await w.synced()
                assert w.headers["Content-Type"].startswith("text/event-stream")
                assert all(e.id for e in w.events)
            assert held(one.events) == held(two.events) == await live(database_url, R)
            assert held(every.events) == await live(database_url, None)
            tags = [f"{R}:t{i}" for i in range(8)] + [f"{OTHER}:y{i}" for i in range(3)]
            applied = await changes(api, [*tags, f"{R}:s0"], 60, seed=2)
            mine = {t: v for t, v in applied.items() if t.startswith(R + ":")}
            for w, expected in ((one, mine), (two, mine), (every, applied)):
                await w.until(_has_changes(w, count_of(expected)))
                await asyncio.sleep(0.3)  # nothing more comes
                assert versions(w.changes()) == expected
            assert held(one.events) == await live(database_url, R)


async def test_last_event_id_resumes_across_an_api_restart_without_gaps_or_repeats(
    settings: Settings, database_url: str
) -> None:
    tags = [f"{R}:r{i}" for i in range(5)]
    async with running_worker(settings):
        async with running_api(settings, watch=True) as api:
            async with watching(api, R) as first:
                await first.synced()
                before = await changes(api, tags, 10, seed=3)
                await first.until(lambda e: len(first.changes()) >= count_of(before))
                resume_at = first.last_id
                # resuming on the same process
            after_same = await changes(api, tags, 6, seed=4)
            async with watching(api, R, last_event_id=resume_at) as same:
                await same.until(lambda e: len(e) >= count_of(after_same))
                await asyncio.sleep(0.3)
                assert versions(same.events) == after_same
                resume_at = same.last_id
            away = await changes(api, tags, 8, seed=5)
        # the api process is gone; changes go on through a second one's writes
        async with running_api(settings, watch=True) as api:
            more = await changes(api, tags, 8, seed=6)
            missed = {t: away.get(t, []) + more.get(t, []) for t in set(away) | set(more)}
            async with watching(api, R, last_event_id=resume_at) as resumed:
                await resumed.until(lambda e: len(e) >= count_of(missed))
                await asyncio.sleep(0.3)
                assert [e.name for e in resumed.events if e.name in ("reset", "synced")] == []
                assert versions(resumed.events) == {t: v for t, v in missed.items() if v}
                # a client that applied every event it got holds the live records
                everything = first.events + same.events + resumed.events
                assert held(everything) == await live(database_url, R)


async def test_a_resume_point_the_topic_no_longer_holds_gives_reset_and_a_snapshot(
    settings: Settings, database_url: str
) -> None:
    tags = [f"{R}:o{i}" for i in range(3)]
    # compacted and deletable: DeleteRecords (what retention does to old records) is
    # refused on a compact-only topic
    await ensure_topics(
        settings,
        [settings.topics.state_topic],
        partitions=3,
        configs={"cleanup.policy": "compact,delete", "retention.ms": "-1"},
    )
    async with running_worker(settings), running_api(settings, watch=True) as api:
        async with watching(api, R) as first:
            await first.synced()
            done = await changes(api, tags, 6, seed=7)
            await first.until(lambda e: len(first.changes()) >= count_of(done))
            old_id = first.events[-1].id
        await changes(api, tags, 6, seed=8)
        # retention moved the log start past the id (as it does to a topic's old records)
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.kafka_bootstrap_servers)
        await admin.start()
        try:
            topic = settings.topics.state_topic
            ends = await _ends(settings, topic)
            await admin.delete_records(
                {TopicPartition(topic, p): RecordsToDelete(end) for p, end in ends.items()}
            )
        finally:
            await admin.close()
        async with watching(api, R, last_event_id=old_id) as resumed:
            events = await resumed.synced()
            assert events[0].name == "reset"
            assert held(events) == await live(database_url, R)
        async with watching(api, R, last_event_id="not-an-id-of-ours") as garbage:
            assert (await garbage.synced())[0].name == "reset"


async def _ends(settings: Settings, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.kafka_bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(settings, topic)]
        return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def test_a_watcher_that_stops_reading_is_cut_off_and_the_others_keep_up(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """The stuck client's snapshot (30,000 records, ~10 MB) fills the socket buffers, so
    its writes block: a write the client does not take within the stall bound cuts it
    off (its queue overflowing while it sends the snapshot does not: a reading watcher
    would catch up from the topic)."""
    settings = make_settings(
        **api_overrides(api_watch_queue_events=100, api_watch_stall_seconds=3.0)
    )
    await _many_live_records(database_url, f"{R}-bulk", 30_000)
    async with (
        running_worker(settings),
        running_api(settings, watch=True) as api,
        watching(api, R) as reader,
    ):
        await reader.synced()
        cut_before = _too_slow()
        stuck = await _stuck_client(api, f"{R}-bulk")
        await asyncio.sleep(0.5)  # its snapshot is stuck in a write
        tags = [f"{R}:big{i}" for i in range(40)]
        started = asyncio.get_running_loop().time()
        applied = await changes(api, tags, 400, seed=9)
        await reader.until(lambda e: len(reader.changes()) >= count_of(applied), timeout=60)
        took = asyncio.get_running_loop().time() - started
        assert versions(reader.changes()) == applied
        async with asyncio.timeout(20):  # its write stalled (3 s): cut off
            while _too_slow() == cut_before:
                await asyncio.sleep(0.1)
        # cut off: the server closed its side (a read sees the end, after the buffer)
        stuck.setblocking(False)
        closed = await _drained_to_eof(stuck)
        assert closed, "the stuck watcher's connection is still open"
        assert _too_slow() == cut_before + 1
        alive = await api.call("GET", f"{api.base}/ocitags/?repository={R}")
        assert alive.status == 200
        assert took < 60


async def test_a_big_snapshot_while_changes_flow_is_not_cut_off_and_misses_nothing(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """A watch of every repository opens on 20,000 records while 300 changes flow, with a
    queue of 10: far more changes arrive during its snapshot than it may queue. It is not
    cut off: it catches up from the topic, goes live, and ends holding live_ocitags."""
    # pages of 50: the snapshot takes 400 reads, long enough on a quiet machine too for
    # far more than 10 changes to arrive during it (they start with it)
    settings = make_settings(**api_overrides(api_watch_queue_events=10, api_watch_snapshot_page=50))
    await _many_live_records(database_url, f"{R}-bulk", 20_000)
    async with running_worker(settings), running_api(settings, watch=True) as api:
        cut_before, catch_ups = _too_slow(), _catch_ups()
        async with watching(api, None) as w:
            tags = [f"{R}:flow{i}" for i in range(30)]
            flowing = asyncio.create_task(changes(api, tags, 300, 4))
            await w.synced(timeout=60)
            await flowing
            want = await live(database_url, None)
            await w.until(lambda e: held(e) == want, timeout=60)
            assert all(v == sorted(set(v)) for v in versions(w.events).values())
            assert not w.ended.is_set() and not any(e.name == "reset" for e in w.events)
        assert _too_slow() == cut_before
        assert _catch_ups() > catch_ups  # the snapshot really outran its queue


def _catch_ups() -> float:
    return float(metrics.API_WATCH_CATCH_UPS._value.get())


def _too_slow() -> float:
    sample = metrics.API_WATCH_DISCONNECTS.labels("too_slow")
    return float(sample._value.get())


async def _many_live_records(database_url: str, repository: str, count: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO ocitags (repository, tag, artifact, created_by, created_on,"
            " last_modified_by, last_modified_on, version, last_event_source, last_event_id)"
            " SELECT $1, 't' || g, repeat('a', 64), 'bulk', now(), 'bulk', now(), 1, 'bulk',"
            " g::text FROM generate_series(1, $2) g",
            repository,
            count,
        )
    finally:
        await conn.close()


async def _stuck_client(api: ApiClient, repository: str) -> socket.socket:
    """A watch whose client never reads (a small receive window fills at once)."""
    host, port = api.base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((host, int(port)))
    path = watch_url(api, repository).removeprefix(api.base)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return sock


async def _drained_to_eof(sock: socket.socket) -> bool:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(20):
            while True:
                chunk = await loop.sock_recv(sock, 65536)
                if not chunk:
                    return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        sock.close()


async def test_watches_past_the_callers_limit_get_429(settings: Settings) -> None:
    async with (
        running_worker(settings),
        running_api(settings, watch=True) as api,
        watching(api) as a,
        watching(api) as b,
        watching(api) as c,
    ):
        await asyncio.gather(a.synced(), b.synced(), c.synced())
        async with (
            watching(api) as d,
            watching(api) as e,
            watching(api) as f,
            watching(api) as g,
        ):
            await asyncio.gather(d.synced(), e.synced(), f.synced())
            await g.ended.wait()
            assert g.status == 429
            assert g.headers["Retry-After"] == "2"
            assert "OCITAG_API_MAX_WATCHES_PER_CALLER" in g.body.decode()
        # the ended watches gave their places back (noticed at the next write: the
        # heartbeat, every second here)
        await asyncio.sleep(1.5)
        async with watching(api) as h, watching(api) as i, watching(api) as j:
            await asyncio.gather(h.synced(), i.synced(), j.synced())


async def test_curl_follows_a_watch(settings: Settings, curl: str) -> None:
    async with running_worker(settings), running_api(settings, watch=True) as api:
        await api.put(f"{R}:curl", {"artifact": DIGEST_A})
        proc = await asyncio.create_subprocess_exec(
            curl,
            "-sN",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "-H",
            "Accept: text/event-stream",
            watch_url(api, R),
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(20):
                while "event: synced" not in lines:
                    lines.append((await proc.stdout.readline()).decode().rstrip("\n"))
                answer = await api.put(f"{R}:curl", {"artifact": DIGEST_B})
                assert answer.status == 200
                while sum(1 for x in lines if x == "event: upsert") < 2:
                    lines.append((await proc.stdout.readline()).decode().rstrip("\n"))
                lines.append((await proc.stdout.readline()).decode().rstrip("\n"))
                lines.append((await proc.stdout.readline()).decode().rstrip("\n"))
        finally:
            proc.terminate()
            await proc.wait()
        events = list(events_of(lines))
        assert [e.name for e in events] == ["upsert", "synced", "upsert"]
        assert [e.json["version"] for e in events if e.name == "upsert"] == [1, 2]


async def test_the_example_subscriber_resumes_across_an_api_restart(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """examples/watch_subscriber.py follows the watch; the api stops and starts again
    (same port) while changes go on; the example reconnects with Last-Event-ID and ends
    holding live_ocitags, having taken no second snapshot."""
    settings = make_settings(**api_overrides(api_port=free_port()))
    tags = [f"{R}:ex{i}" for i in range(4)]
    example = Path(__file__).parents[2] / "examples" / "watch_subscriber.py"
    async with running_worker(settings):
        async with running_api(settings, watch=True) as api:
            await changes(api, tags, 4, seed=10)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(example),
                "--url",
                api.base,
                "--token",
                TOKEN,
                "--repository",
                R,
                "--retry-seconds",
                "0.2",
                stdout=asyncio.subprocess.PIPE,
            )
            assert proc.stdout is not None
            lines: list[dict[str, Any]] = []

            async def read_until(done: Callable[[dict[str, Any]], bool]) -> None:
                async with asyncio.timeout(30):
                    while not lines or not done(lines[-1]):
                        lines.append(json.loads(await proc.stdout.readline()))  # type: ignore[union-attr]

            await read_until(lambda line: line.get("event") == "synced")
            await changes(api, tags, 4, seed=11)
        try:
            await read_until(lambda line: "reconnecting" in line)
            async with running_api(settings, watch=True) as api:
                await changes(api, tags, 6, seed=12)
                expected = await live(database_url, R)

                def caught_up(_: dict[str, Any]) -> bool:
                    # the example's map as its lines so far make it: every live tag at its
                    # version AND every deleted one gone (a deletion can arrive after the
                    # last move of the live tags: another partition)
                    view: dict[str, int] = {}
                    for line in lines:
                        event = line.get("event")
                        if event == "reset":
                            view.clear()
                        elif event == "upsert":
                            data = json.loads(line["data"])
                            view[f"{R}:{data['tag']}"] = data["version"]
                        elif event == "delete":
                            view.pop(json.loads(line["data"])["tag"], None)
                    return view == expected

                await read_until(caught_up)
        finally:
            proc.send_signal(signal.SIGTERM)
            rest, _ = await asyncio.wait_for(proc.communicate(), 20)
        final = json.loads(rest.decode().strip().splitlines()[-1])
        assert final["tags"] == expected
        names = [line.get("event") for line in lines]
        assert names.count("synced") == 1 and "reset" not in names


async def test_a_watch_shows_only_the_tags_its_caller_may_read(
    make_settings: Callable[..., Settings],
) -> None:
    grants = {
        "ci": [{"actions": ["read", "write", "delete"], "tags": ["**"]}],
        "other": [{"actions": ["read"], "tags": [f"{R}:open*"]}],
    }
    settings = make_settings(**api_overrides(api_grants=json.dumps(grants)))
    async with running_worker(settings), running_api(settings, watch=True) as api:
        for tag in ("open-1", "secret-1"):
            assert (await api.put(f"{R}:{tag}", {"artifact": DIGEST_A})).status == 200
        async with watching(api, R, token=OTHER_TOKEN) as limited, watching(api, R) as full:
            await limited.synced()
            await full.synced()
            for tag in ("open-2", "secret-2"):
                assert (await api.put(f"{R}:{tag}", {"artifact": DIGEST_B})).status == 200
            await full.until(_has_changes(full, 2))
            await limited.until(_has_changes(limited, 1))
            await asyncio.sleep(0.3)
        assert set(held(limited.events)) == {f"{R}:open-1", f"{R}:open-2"}
        assert len(held(full.events)) == 4
