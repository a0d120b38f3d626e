"""The poll loop's and the batch runner's rules, against fakes of the consumer, the
producer and the store (tests/helpers/fakes.py): pause/resume while a batch is in
flight, commit only after apply and publish, nothing committed after a fatal error,
a given-up batch fetched again, revocation finishing in-flight work, refused events
rejected alone. The real edges are tested against Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog.testing
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError

from tests.helpers.fakes import (
    TOPIC,
    FakeClock,
    FakeConsumer,
    FakeOutcomeProducer,
    FakeStore,
    event_value,
    health,
)
from tests.helpers.strategies import BASE, digest, make_event
from worker.batches import Batch, BatchRunner, runs_of
from worker.coalesce import ALONE_FROM
from worker.deadletter import DeadLetters
from worker.errors import PermanentError
from worker.events import RawRecord
from worker.health import Check, Health
from worker.outcomes import Outcome
from worker.pipeline import Pipeline
from worker.plan import Item
from worker.rawrecords import RawParts
from worker.settings import Settings, load_settings
from worker.unreadable import Unreadable

P0 = TopicPartition(TOPIC, 0)
P1 = TopicPartition(TOPIC, 1)
P2 = TopicPartition(TOPIC, 2)


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "input_topic": TOPIC,
        "poll_timeout_ms": 5,
        "retry_backoff_initial_seconds": 0.001,
        "retry_backoff_max_seconds": 0.005,
        "shutdown_grace_seconds": 2,
    }
    values.update(overrides)
    return load_settings(values, environ={})


class World:
    """A pipeline on fakes, and the journal of what they saw, in order."""

    def __init__(
        self,
        dlq_limit: int = 1_000_000,
        reader: Any = None,
        liveness: Health | None = None,
        **overrides: Any,
    ) -> None:
        self.journal: list[tuple[str, object]] = []
        self.settings = settings(**overrides)
        self.consumer = FakeConsumer(self.journal)
        self.store = FakeStore(self.journal)
        self.publisher = FakeOutcomeProducer(self.journal)
        self.dead_letters = DeadLetters(self.publisher, self.settings.topics.dlq_topic, dlq_limit)
        self.runner = BatchRunner(
            self.settings, self.consumer, self.publisher, self.store, self.dead_letters
        )
        unreadable = Unreadable(
            self.consumer, reader, TOPIC, self.settings.consumer.max_batch_records
        )
        self.pipeline = Pipeline(
            self.settings, self.consumer, self.runner, unreadable, liveness or health()
        )
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def kinds(self, *kinds: str) -> list[tuple[str, object]]:
        return [entry for entry in self.journal if entry[0] in kinds]

    def outcomes(self) -> list[dict[str, Any] | bytes]:
        out: list[dict[str, Any] | bytes] = []
        for message in self.publisher.sent:
            topic, value = message.topic, message.value
            if topic == self.settings.topics.outcome_topic:
                assert value is not None
                out.append(value if value.startswith(b"ok:") else json.loads(value))
        return out


@contextlib.asynccontextmanager
async def running(world: World) -> AsyncIterator[World]:
    world.task = asyncio.create_task(world.pipeline.run(world.stop))
    try:
        yield world
    finally:
        world.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(world.task, 10)


async def until(condition: Any, timeout: float = 5.0) -> None:
    """As tests' ``eventually()``, polling faster: the fakes answer in microseconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


def held_two_partition_run(**overrides: Any) -> World:
    """A world (``World(**overrides)``) whose first fetch is one run of two partitions,
    "a" on partition 0 and "b" on partition 1, held in the store until the test sets
    ``world.store.gate``."""
    world = World(**overrides)
    world.consumer.add(0, event_value("a"))
    world.consumer.add(1, event_value("b", "2.0"))
    world.store.gate.clear()
    return world


# ---- the loop's rules


async def test_a_partition_is_paused_while_its_batch_is_in_flight_and_others_go_on() -> None:
    world = World()
    world.consumer.add(0, event_value("a"))
    world.store.gate.clear()
    async with running(world):
        await until(lambda: world.kinds("apply"))
        assert P0 in world.consumer.paused
        world.consumer.add(1, event_value("b", "2.0"))  # another partition is not held up
        await until(lambda: len(world.kinds("apply")) == 2)
        assert not world.kinds("commit")
        world.store.gate.set()
        await until(lambda: world.consumer.commits == {P0: 1, P1: 1})
        await until(lambda: P0 not in world.consumer.paused)


async def test_a_fetchs_partitions_are_applied_published_and_committed_as_one_run() -> None:
    """One transaction and one send for every partition a fetch brought; each
    partition's own offset committed after them."""
    world = World()
    world.consumer.add(0, event_value("a"), event_value("c", "3.0"))
    world.consumer.add(1, event_value("b", "2.0"))
    async with running(world):
        await until(lambda: world.consumer.commits == {P0: 2, P1: 1})
    assert [ids for _, ids in world.kinds("apply")] == [["a", "c", "b"]]
    assert len(world.kinds("publish")) == 1
    assert world.outcomes() == [b"ok:a", b"ok:c", b"ok:b"]  # in the run's record order


async def test_a_large_batch_is_a_run_of_its_own_beside_the_small_ones() -> None:
    """A backlog's runs must overlap: a partition batch of ALONE_FROM records or more
    does not share a run (worker/batches.py)."""
    world = World()
    large = [event_value(f"l{n}", f"9.{n}") for n in range(ALONE_FROM)]
    world.consumer.add(0, *large)
    world.consumer.add(1, event_value("b", "2.0"))
    world.consumer.add(2, event_value("c", "3.0"))
    async with running(world):
        await until(lambda: world.consumer.commits == {P0: ALONE_FROM, P1: 1, P2: 1})
    applied = [ids for _, ids in world.kinds("apply")]
    assert sorted(map(str, applied), key=len) == [
        str(["b", "c"]),
        str([f"l{n}" for n in range(ALONE_FROM)]),
    ]


async def test_a_run_is_given_up_whole_and_each_partition_still_ours_fetched_again() -> None:
    """Revoking one partition of a run stuck on the database gives the run up: nothing
    of it is committed, and both partitions are fetched again from their first record."""
    world = World()
    world.consumer.add(0, event_value("a"), event_value("c", "3.0"))
    world.consumer.add(1, event_value("b", "2.0"))
    world.store.transient = 1_000_000
    async with running(world):
        await until(lambda: len(world.kinds("apply")) >= 2)  # retrying
        await asyncio.wait_for(world.pipeline.on_partitions_revoked([P0]), 5)
        await until(lambda: all(s in world.journal for s in [("seek", (0, 0)), ("seek", (1, 0))]))
        assert not world.consumer.commits
        world.store.transient = 0
        await until(lambda: world.consumer.commits == {P0: 2, P1: 1})


async def test_revoking_a_runs_partitions_waits_for_the_run_and_counts_it_once() -> None:
    world = held_two_partition_run()
    with structlog.testing.capture_logs() as captured:
        async with running(world):
            await until(lambda: world.kinds("apply"))
            revoking = asyncio.create_task(world.pipeline.on_partitions_revoked([P0, P1]))
            await asyncio.sleep(0.02)
            assert not revoking.done()  # waits for the run holding both
            world.store.gate.set()
            await asyncio.wait_for(revoking, 5)
            # both committed before the partitions went
            assert world.consumer.commits == {P0: 1, P1: 1}
    assert [ids for _, ids in world.kinds("apply")] == [["a", "b"]]
    (revoked,) = [line for line in captured if line["event"] == "partitions_revoked"]
    assert (revoked["finished"], revoked["given_up"]) == (1, 0)  # one run, counted once


async def test_a_run_past_the_grace_is_cancelled_whole_and_nothing_of_it_commits() -> None:
    """Not retrying, just slow (the database holds it): the stop's grace runs out, the
    run is given up, then cancelled; neither partition is committed (both are
    redelivered) and nothing of the run is left in flight."""
    world = held_two_partition_run(shutdown_grace_seconds=0.05)
    with structlog.testing.capture_logs() as captured:
        async with running(world):
            await until(lambda: world.kinds("apply"))
    assert not world.consumer.commits
    (drained,) = [line for line in captured if line["event"] == "drained"]
    assert (drained["finished"], drained["given_up"]) == (0, 1)
    assert world.pipeline._batches == {}


async def test_a_bug_in_a_run_commits_none_of_its_partitions() -> None:
    world = World()
    world.consumer.add(0, event_value("ok"))
    world.consumer.add(1, event_value("boom", "2.0"))
    world.store.bugs = {"boom"}
    task = asyncio.create_task(world.pipeline.run(world.stop))
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(task, 10)
    assert world.consumer.commits == {}


async def test_every_partition_is_paused_while_the_in_flight_cap_is_reached() -> None:
    world = World(max_in_flight_records=2)
    world.consumer.add(0, event_value("a"), event_value("b"))
    world.consumer.add(1)  # nothing yet, assigned
    world.store.gate.clear()
    async with running(world):
        await until(lambda: world.kinds("apply"))
        await until(lambda: world.consumer.paused == world.consumer.assigned)
        world.consumer.add(1, event_value("c", "2.0"))
        for _ in range(20):  # polls go on (membership), fetching nothing while full
            await asyncio.sleep(0.002)
        assert len(world.kinds("apply")) == 1
        world.store.gate.set()
        await until(lambda: world.consumer.commits == {P0: 2, P1: 1})


async def test_the_offset_is_committed_last_plus_one_only_after_apply_and_publish() -> None:
    world = World(max_batch_records=2)
    world.consumer.add(0, event_value("a"), event_value("b"), event_value("c"))
    world.publisher.gate.clear()
    async with running(world):
        await until(lambda: world.kinds("apply"))
        await asyncio.sleep(0.05)  # publish is held: whatever else happens, no commit
        assert not world.kinds("commit")
        world.publisher.gate.set()
        await until(lambda: world.consumer.commits == {P0: 3})
    # commits run in the background: each names an offset whose batch was published
    # before it (batches end at 2 and 3), never one ahead of the publishing
    published = 0
    committed = []
    for kind, value in world.kinds("publish", "commit"):
        if kind == "publish":
            published += 1
        else:
            assert isinstance(value, tuple)
            committed.append(value[1])
            assert published >= {2: 1, 3: 2}[value[1]]
    assert committed == sorted(set(committed)) and committed[-1] == 3


async def test_nothing_commits_after_a_fatal_error() -> None:
    world = World(max_batch_records=1)
    world.consumer.add(0, event_value("ok-1"), event_value("boom"), event_value("ok-2"))
    world.store.bugs = {"boom"}
    task = asyncio.create_task(world.pipeline.run(world.stop))
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(task, 10)
    assert world.consumer.commits == {P0: 1}
    assert ["ok-2"] not in [ids for _, ids in world.kinds("apply")]


async def test_the_poll_loop_waiting_out_a_broker_outage_is_alive() -> None:
    clock = FakeClock()
    liveness = Health(1.0, clock)
    # a backoff far longer than the liveness timeout (the shipped 30 s vs 60 s is closer)
    world = World(liveness=liveness, retry_backoff_initial_seconds=30, retry_backoff_max_seconds=30)
    world.consumer.fetch_errors.append(KafkaConnectionError("broker away"))
    world.task = asyncio.create_task(world.pipeline.run(world.stop))
    try:
        await until(lambda: not world.consumer.fetch_errors)
        await asyncio.sleep(0)  # the loop is in its backoff now
        clock.advance(100)
        assert liveness.live() == Check(True, "poll-loop waiting for Kafka")
    finally:
        world.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await world.task


async def test_a_transient_fault_retries_the_same_batch_and_then_commits() -> None:
    world = World()
    world.consumer.add(0, event_value("a"), event_value("b"))
    world.store.transient = 3
    async with running(world):
        await until(lambda: world.consumer.commits == {P0: 2})
    applied = [ids for _, ids in world.kinds("apply")]
    assert applied == [["a", "b"]] * 4
    assert [value for _, value in world.kinds("commit")] == [(0, 2)]


async def test_a_commit_the_group_refused_is_retried_while_the_partition_stays_ours() -> None:
    """A rebalance that left the partition here: the commit goes through under the new
    generation, and the batch is not done again."""
    world = World()
    world.consumer.add(0, event_value("a"), event_value("b"))
    world.consumer.commit_errors = [CommitFailedError("rebalanced")]
    async with running(world):
        await until(lambda: world.consumer.commits == {P0: 2})
    assert [ids for _, ids in world.kinds("apply")] == [["a", "b"]]


async def test_one_commit_answers_for_the_batches_done_meanwhile() -> None:
    """While a commit is on its way, batches of other partitions finish: the next
    commit names all of them at once, and no partition waited for the first."""
    world = World()
    world.consumer.add(0, event_value("a"))
    world.consumer.commit_gate.clear()
    async with running(world):
        await until(lambda: world.consumer.commit_calls == 1)  # held at the broker
        world.consumer.add(1, event_value("b", "2.0"))
        world.consumer.add(0, event_value("c", "3.0"))
        await until(lambda: len(world.outcomes()) == 3)  # not held up by it
        world.consumer.commit_gate.set()
        await until(lambda: world.consumer.commits == {P0: 2, P1: 1})
    assert world.consumer.commit_calls == 2


async def test_a_batch_given_up_while_its_partition_stays_ours_is_fetched_again() -> None:
    """Revocation began while the batch waited for the database; the partition was
    assigned straight back: its records are fetched again from the batch's first."""
    world = World()
    world.consumer.add(0, event_value("a"), event_value("b"))
    world.store.transient = 1_000_000
    async with running(world):
        await until(lambda: len(world.kinds("apply")) >= 2)  # retrying
        await asyncio.wait_for(world.pipeline.on_partitions_revoked([P0]), 5)
        await until(lambda: ("seek", (0, 0)) in world.journal)
        assert not world.consumer.commits
        world.store.transient = 0
        await until(lambda: world.consumer.commits == {P0: 2})


async def test_revocation_finishes_in_flight_batches_before_the_partitions_go() -> None:
    world = World()
    world.consumer.add(0, event_value("a"))
    world.store.gate.clear()
    async with running(world):
        await until(lambda: world.kinds("apply"))
        revoking = asyncio.create_task(world.pipeline.on_partitions_revoked([P0]))
        await asyncio.sleep(0.02)
        assert not revoking.done()  # waits for the batch
        world.store.gate.set()
        await asyncio.wait_for(revoking, 5)
        assert world.consumer.commits == {P0: 1}  # committed before the partition went


async def test_a_join_before_the_first_assignment_logs_no_revocation_and_no_drain() -> None:
    """aiokafka revokes the previous assignment, none, on the first join: no
    ``partitions_revoked []`` nor ``drained`` then. A real revocation is one line saying
    what finished; the shutdown drain is logged even when nothing was in flight."""
    world = World()
    world.consumer.add(0, event_value("a"))
    with structlog.testing.capture_logs() as captured:
        await world.pipeline.on_partitions_revoked([])
        async with running(world):
            await until(lambda: world.consumer.commits == {P0: 1})
            await world.pipeline.on_partitions_revoked([P0])
    said = [
        {k: v for k, v in line.items() if k != "log_level"}
        for line in captured
        if line["event"] in {"partitions_revoked", "drained"}
    ]
    assert said == [
        {"event": "partitions_revoked", "partitions": [0], "finished": 0, "given_up": 0},
        {"event": "drained", "finished": 0, "given_up": 0},
    ]


async def test_an_unreadable_record_is_rejected_alone_with_what_could_be_read() -> None:
    class Reader:
        async def read(self, tp: TopicPartition, offset: int) -> RawParts | None:
            return RawParts(5, b"k", b"raw", (("\udcff", b"1"),))

    world = World(reader=Reader())
    world.consumer.add(0, event_value("a"), b"bad", event_value("c", "2.0"))
    world.consumer.unreadable.add((P0, 1))
    async with running(world):
        await until(lambda: world.consumer.commits == {P0: 3})
    outcomes = world.outcomes()
    assert outcomes[0] == b"ok:a" and outcomes[2] == b"ok:c"
    rejected = outcomes[1]
    assert isinstance(rejected, dict) and rejected["status"] == 400
    assert rejected["data"]["instance"] == f"urn:kafka:{TOPIC}:0:1"
    (letter,) = [m for m in world.publisher.sent if m.topic == world.settings.topics.dlq_topic]
    headers = dict(letter[3])
    assert (letter[1], letter[2], headers["\\xff"]) == (b"k", b"raw", b"1")
    assert headers["ocitag_dlq_escaped_header_keys"] == b"1"


async def test_a_dead_letter_the_topic_refuses_is_trimmed_and_the_batch_commits() -> None:
    """The limit read at start was wrong: the refusal halves it until the copy fits."""
    world = World(dlq_limit=1_000_000)
    world.publisher.limits[world.settings.topics.dlq_topic] = 50_000
    world.consumer.add(0, b"\xff" + b"x" * 150_000, event_value("after"))
    async with running(world):
        await until(lambda: world.consumer.commits == {P0: 2})
    (letter,) = [m for m in world.publisher.sent if m.topic == world.settings.topics.dlq_topic]
    headers = dict(letter[3])
    assert letter[2] is None and headers["ocitag_dlq_value_omitted_bytes"] == b"150001"
    assert world.dead_letters.limit < 1_000_000  # remembered for the next ones


# ---- refused events (the store says PermanentError)


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


def runner(store: RefusingStore) -> BatchRunner:
    world = World()
    return BatchRunner(world.settings, world.consumer, world.publisher, store, world.dead_letters)


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
    outcomes = await runner(store).apply(items("a", "bad", "c"), datetime.now(UTC))
    assert [o.status for o in outcomes] == [200, 500, 200]
    body: dict[str, Any] = json.loads(outcomes[1].value)
    assert (
        body["data"]["type"].endswith("/internal")
        and "could not be stored" in body["data"]["detail"]
    )
    assert store.calls == [3, 1, 1, 1]


async def test_a_refused_single_event_does_not_stop_the_worker() -> None:
    outcomes = await runner(RefusingStore({"bad"})).apply(items("bad"), datetime.now(UTC))
    assert [o.status for o in outcomes] == [500]


async def test_internal_outcome_is_the_same_on_redelivery() -> None:
    """Not stored, so rebuilt on each delivery: nothing of the wall clock may enter it."""
    first = await runner(RefusingStore({"bad"})).apply(items("bad"), datetime.now(UTC))
    again = await runner(RefusingStore({"bad"})).apply(items("bad"), datetime.now(UTC))
    assert first[0].value == again[0].value


def test_outcome_ids_are_rfc_4122_uuid5() -> None:
    import uuid

    from worker.outcomes import _NAMESPACE, outcome_id

    for source, event_id in [("s", "e"), ("https://r.example/hook", "ünïcode-id"), ("", "")]:
        expected = uuid.uuid5(_NAMESPACE, f"{source}\n{event_id}\n{b'fp'.hex()}")
        assert outcome_id(source, event_id, b"fp") == str(expected)


# ---- the state topic's records (worker/state.py), in the same discipline


async def test_state_records_are_acknowledged_with_the_outcomes_before_the_commit() -> None:
    world = World(max_batch_records=2)
    world.store.with_state = True
    world.consumer.add(0, event_value("a"), event_value("b"))
    world.publisher.gate.clear()
    async with running(world):
        await until(lambda: world.kinds("apply"))
        await asyncio.sleep(0.05)  # nothing acknowledged: nothing committed
        assert not world.kinds("commit")
        world.publisher.gate.set()
        await until(lambda: world.consumer.commits == {P0: 2})
    state = world.settings.topics.state_topic
    sent = [(m.topic, m.key) for m in world.publisher.sent]
    assert sent == [
        (world.settings.topics.outcome_topic, b"k"),
        (world.settings.topics.outcome_topic, b"k"),
        (state, b"tag:a"),
        (state, b"tag:b"),
    ]
    first_commit = next(i for i, e in enumerate(world.journal) if e[0] == "commit")
    publish = next(i for i, e in enumerate(world.journal) if e[0] == "publish")
    assert publish < first_commit
    assert all(
        ("content-type", b"application/json") in m.headers
        for m in world.publisher.sent
        if m.topic == state
    )


async def test_a_failed_state_send_blocks_the_commit_and_the_batch_is_retried() -> None:
    world = World()
    world.store.with_state = True
    world.publisher.failures = {world.settings.topics.state_topic: 3}
    world.consumer.add(0, event_value("a"))
    async with running(world):
        await until(lambda: world.consumer.commits == {P0: 1})
    kinds = [kind for kind, _ in world.kinds("apply", "send_failed", "publish", "commit")]
    # three failed sends, each retried from the apply (a replay), then published, then
    # committed: never a commit before the state record was acknowledged
    assert kinds == ["apply", "send_failed"] * 3 + ["apply", "publish", "commit"]
    assert [m.key for m in world.publisher.sent if m.topic.endswith("state")] == [b"tag:a"]


async def test_with_the_state_topic_off_nothing_is_sent_to_it() -> None:
    world = World(state_topic="")
    world.store.with_state = True
    world.consumer.add(0, event_value("a"))
    async with running(world):
        await until(lambda: world.consumer.commits == {P0: 1})
    assert {m.topic for m in world.publisher.sent} == {world.settings.topics.outcome_topic}


# ---- which batches of a fetch share a run (pure)


def _batch(partition: int, records: int) -> Batch:
    raw = [RawRecord(TOPIC, partition, n, 0, None, b"", ()) for n in range(records)]
    return Batch(TopicPartition(TOPIC, partition), raw, 0.0)


@pytest.mark.parametrize(
    ("sizes", "runs"),
    [
        ([], []),
        ([1], [[0]]),
        ([5, 7, 1], [[0, 1, 2]]),
        ([ALONE_FROM - 1, 1], [[0, 1]]),
        ([ALONE_FROM], [[0]]),
        ([ALONE_FROM, 3, 2_000, 4], [[1, 3], [0], [2]]),
        ([ALONE_FROM, 2_000], [[0], [1]]),
    ],
)
def test_small_batches_share_a_run_and_each_large_one_runs_alone(
    sizes: list[int], runs: list[list[int]]
) -> None:
    batches = [_batch(p, n) for p, n in enumerate(sizes)]
    got = runs_of(batches)
    assert [[b.tp.partition for b in run] for run in got] == runs
    # every batch in exactly one run
    assert sorted(id(b) for run in got for b in run) == sorted(id(b) for b in batches)
