"""The background committer's rules, against the fake consumer: what a refused,
failed or slow commit does, and what a flush (revocation, shutdown) can count on.
The pipeline's use of it is tested in test_pipeline.py; the real consumer in the
integration and fault suites."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, InvalidCommitOffsetSizeError, NodeNotReadyError

from tests.helpers.fakes import TOPIC, FakeConsumer
from worker.commits import Committer
from worker.retry import Backoff

P0 = TopicPartition(TOPIC, 0)
P1 = TopicPartition(TOPIC, 1)


class Setup:
    def __init__(self, backoff_seconds: float = 0.001, interval: float = 0.0) -> None:
        self.consumer = FakeConsumer([])
        self.consumer.add(0)
        self.consumer.add(1)
        self.fatal: list[BaseException] = []
        self.committer = Committer(
            self.consumer,
            Backoff(backoff_seconds, backoff_seconds),
            self.fatal.append,
            interval=interval,
        )


@asynccontextmanager
async def running(setup: Setup) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(setup.committer.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_one_commit_names_the_latest_done_offset_of_every_partition() -> None:
    setup = Setup()
    setup.consumer.commit_gate.clear()
    async with running(setup):
        setup.committer.done(P0, 3)
        await asyncio.sleep(0.01)  # the first commit is on its way, held at the broker
        setup.committer.done(P0, 5)
        setup.committer.done(P1, 2)
        setup.committer.done(P0, 4)  # older than what is pending: ignored
        setup.consumer.commit_gate.set()
        assert await setup.committer.flush(None, 5)
    assert setup.consumer.commits == {P0: 5, P1: 2}
    assert setup.consumer.commit_calls == 2
    assert [entry for entry in setup.consumer.journal if entry[0] == "commit"] == [
        ("commit", (0, 3)),
        ("commit", (0, 5)),
        ("commit", (1, 2)),
    ]


async def test_an_error_no_retry_can_mend_stops_the_worker() -> None:
    setup = Setup()
    setup.consumer.commit_errors = [InvalidCommitOffsetSizeError("metadata too large")]
    async with running(setup) as task:
        setup.committer.done(P0, 1)
        assert not await setup.committer.flush(None, 5)
        await asyncio.wait_for(task, 5)  # ended by itself
    assert len(setup.fatal) == 1 and "committing offsets" in str(setup.fatal[0])
    assert not setup.consumer.commits


async def test_a_flush_cuts_a_backoff_short() -> None:
    """After a broker error the next attempt would wait 30 s: a flush with 5 s of grace
    does not wait for it (the broker answers again)."""
    setup = Setup(backoff_seconds=30.0)
    setup.consumer.commit_errors = [NodeNotReadyError("coordinator moving")]
    async with running(setup):
        setup.committer.done(P0, 7)
        await asyncio.sleep(0.01)  # failed once, backing off
        assert setup.consumer.commit_calls == 1
        assert await setup.committer.flush([P0], 5)
    assert setup.consumer.commits == {P0: 7}


async def test_a_refused_commit_is_retried_for_partitions_kept_and_not_for_those_leaving() -> None:
    setup = Setup()
    setup.consumer.commit_errors = [CommitFailedError("rebalanced")]
    setup.consumer.commit_gate.clear()
    async with running(setup):
        setup.committer.done(P0, 4)
        setup.committer.done(P1, 6)
        # P1 is being revoked: the refusal gives it up; P0 stays ours and is retried
        flushing = asyncio.create_task(setup.committer.flush([P1], 5))
        await asyncio.sleep(0.01)
        setup.consumer.commit_gate.set()
        assert await flushing
        async with asyncio.timeout(5):
            while setup.consumer.commits != {P0: 4}:
                await asyncio.sleep(0.002)
    assert setup.consumer.commit_calls == 2
    assert not setup.committer.pending()


@pytest.mark.parametrize("other_pending", [False, True], ids=["other-ended", "other-waiting"])
async def test_overlapping_flushes_each_keep_their_partitions_leaving(other_pending: bool) -> None:
    """A revocation's flush of P1 waits on a commit; another flush (of P0) overlaps it,
    ending at once (nothing of P0 pending) or waiting too. When the broker then refuses
    the commit (the group moved on), P1 is still leaving: it is given up, not retried,
    whatever the other flush did meanwhile (neither its start nor its end may drop P1
    from the partitions leaving)."""
    setup = Setup()
    setup.consumer.commit_errors = [CommitFailedError("rebalanced")]
    setup.consumer.commit_gate.clear()
    async with running(setup):
        setup.committer.done(P1, 6)
        if other_pending:
            setup.committer.done(P0, 4)
        first = asyncio.create_task(setup.committer.flush([P1], 5))
        await asyncio.sleep(0.01)  # the commit is on its way, held at the broker
        second = asyncio.create_task(setup.committer.flush([P0], 5))
        await asyncio.sleep(0.01)
        assert second.done() is not other_pending
        setup.consumer.commit_gate.set()
        assert await asyncio.wait_for(first, 2)
        assert await asyncio.wait_for(second, 2)
        await asyncio.sleep(0.02)  # a retry, had there been one, would be done by now
    assert setup.consumer.commits == {}
    assert setup.consumer.commit_calls == 1
    assert not setup.committer.pending()


async def test_a_committer_that_died_of_a_bug_does_not_make_flushes_wait() -> None:
    setup = Setup()

    async def broken(offsets: object) -> None:
        raise RuntimeError("a bug")

    setup.consumer.commit = broken  # type: ignore[method-assign]
    async with running(setup) as task:
        setup.committer.done(P0, 1)
        assert not await asyncio.wait_for(setup.committer.flush(None, 60), 5)
        assert isinstance(task.exception(), RuntimeError)


async def test_commits_are_spaced_and_a_flush_does_not_wait_for_the_spacing() -> None:
    """The first done batch is committed at once; those done within the interval after
    it share the next commit, which a flush (revocation, shutdown) does not wait for."""
    setup = Setup(interval=30.0)
    async with running(setup):
        await _first_commit(setup)
        setup.committer.done(P0, 2)
        setup.committer.done(P1, 4)
        await asyncio.sleep(0.05)
        assert setup.consumer.commit_calls == 1  # spaced: nothing sent yet
        assert await asyncio.wait_for(setup.committer.flush(None, 5), 2)
        assert setup.consumer.commits == {P0: 2, P1: 4}
        assert setup.consumer.commit_calls == 2  # one request for both
        # the flush's hurry does not outlive it: the next batch waits its turn again
        setup.committer.done(P0, 3)
        await asyncio.sleep(0.05)
        assert setup.consumer.commits[P0] == 2


async def test_a_flush_that_ends_keeps_the_hurry_of_another_still_waiting() -> None:
    """A revocation's flush and the shutdown's overlap: the first to end does not make the
    other wait out the spacing (30 s here, against a bound of 2 s)."""
    setup = Setup(interval=30.0)
    async with running(setup):
        await _first_commit(setup)
        setup.committer.done(P1, 4)
        # P0 has nothing pending: this flush ends at once, while the other still waits
        other = asyncio.create_task(setup.committer.flush([P1], 5))
        await asyncio.sleep(0)
        assert await setup.committer.flush([P0], 5)
        setup.committer.done(P1, 5)  # done meanwhile: the waiting flush wants it too
        assert await asyncio.wait_for(other, 2)
        assert setup.consumer.commits[P1] == 5


async def _first_commit(setup: Setup) -> None:
    """P0's offset 1 done and committed at once (the first commit waits no spacing)."""
    setup.committer.done(P0, 1)
    async with asyncio.timeout(5):
        while setup.consumer.commits != {P0: 1}:
            await asyncio.sleep(0.002)


async def test_a_cancellation_that_meets_a_flushs_hurry_still_ends_the_committer() -> None:
    """On Python 3.11 ``asyncio.wait_for`` returns the inner wait's result when the task
    is cancelled in the turn that wait ends, losing the cancellation: the committer then
    waited for work forever, and the stop waiting for it hung (seen once in CI)."""
    setup = Setup(backoff_seconds=30.0)
    setup.consumer.commit_errors = [NodeNotReadyError("coordinator moving")]
    task = asyncio.create_task(setup.committer.run())
    setup.committer.done(P0, 7)
    await asyncio.sleep(0.01)  # failed once, backing off 30 s
    flushing = asyncio.create_task(setup.committer.flush([P0], 5))
    await asyncio.sleep(0)  # the flush hurries the backoff: its wait ends next turn
    task.cancel()  # ... the turn the stop cancels the committer
    done, _ = await asyncio.wait([task], timeout=2)
    assert done, "the committer's cancellation was lost"
    assert task.cancelled()
    flushing.cancel()
    await asyncio.gather(flushing, return_exceptions=True)
