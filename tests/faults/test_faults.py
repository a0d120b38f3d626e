"""Delivery under faults (docs/contract.md "Semantics": Delivery, Faults): real worker
processes against the real broker and database; each scenario streams >= 20,000 events
over >= 1,000 tags, injects its fault mid-stream, and then checks everything against the
reference model.

``make faults-long`` runs more seeds and longer streams (OCITAG_FAULT_SEEDS,
OCITAG_FAULT_EVENTS). Recovery times and duplicate counts go to
.cache/faults-report.json and the test output.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.helpers.faults import RATE, Scenario, Stream, record, scenario, stack
from tests.helpers.services import Services

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = int(os.environ.get("OCITAG_FAULT_EVENTS", "20000"))
TAGS = int(os.environ.get("OCITAG_FAULT_TAGS", "1000"))
SEEDS = list(range(1, int(os.environ.get("OCITAG_FAULT_SEEDS", "1")) + 1))


async def outage(s: Scenario, service: str, after: float = 2.0, seconds: float = 10) -> None:
    """Stop one service of the local stack mid-stream for ``seconds``."""
    await asyncio.sleep(after)
    await asyncio.to_thread(stack, f"{service}-stop")
    await asyncio.sleep(seconds)
    await asyncio.to_thread(stack, f"{service}-start")
    s.fault_ended_at = time.monotonic()


async def run(s: Scenario, fault: object, timeout: float = 240) -> None:
    """Produce the stream while ``fault`` runs; wait for the drain; verify."""
    stream = Stream.make(s.seed, s.events, s.tags)
    producing = asyncio.create_task(s.produce(stream, RATE))
    started = time.monotonic()
    await fault  # type: ignore[misc]
    await producing
    s.report["produce_seconds"] = round(time.monotonic() - started, 1)
    s.report["recovery_seconds"] = round(await s.wait_drained(len(stream.records), timeout), 2)
    await s.verify()


@pytest.mark.parametrize("seed", SEEDS)
async def test_sigkill_at_random_moments(
    local_stack: Services, database_url: str, tmp_path: Path, seed: int
) -> None:
    async with scenario(
        "sigkill", local_stack.kafka_bootstrap, database_url, tmp_path, EVENTS, TAGS, seed
    ) as s:
        s.start_worker()
        rng = random.Random(seed)

        async def kill_five_times() -> None:
            for _ in range(5):
                await asyncio.sleep(rng.uniform(0.8, 1.8))
                for w in s.live():
                    w.proc.send_signal(signal.SIGKILL)
                    w.proc.wait()
                s.start_worker()
            s.fault_ended_at = time.monotonic()

        await run(s, kill_five_times())
        assert sum(1 for w in s.workers if w.proc.returncode == -signal.SIGKILL) == 5
        record("sigkill", seed, s.report)


@pytest.mark.parametrize("seed", SEEDS)
async def test_postgres_stopped_for_10_seconds(
    local_stack: Services, database_url: str, tmp_path: Path, seed: int
) -> None:
    async with scenario(
        "postgres", local_stack.kafka_bootstrap, database_url, tmp_path, EVENTS, TAGS, seed
    ) as s:
        s.start_worker()

        await run(s, outage(s, "pg"))
        (worker,) = s.workers
        assert worker.proc.poll() is None, "the worker must ride out a database outage"
        lines = worker.events()
        # waited out as one outage: a line when it started and one when it ended, not
        # one per batch and attempt
        said = [line["event"] for line in lines if line.get("dependency") == "postgresql"]
        assert said[0] == "outage_started", said
        assert said[-1] == "outage_ended", said
        assert said.count("outage_started") == 1, said
        assert not any(line["event"] == "retrying" for line in lines)
        # retried, never turned into a problem outcome
        statuses = {line["status"] for line in lines if line["event"] == "event"}
        assert statuses <= {200, 400, 404, 409, 422}, statuses
        record("postgres", seed, s.report)


@pytest.mark.parametrize("seed", SEEDS)
async def test_kafka_stopped_for_10_seconds(
    local_stack: Services, database_url: str, tmp_path: Path, seed: int
) -> None:
    async with scenario(
        "kafka", local_stack.kafka_bootstrap, database_url, tmp_path, EVENTS, TAGS, seed
    ) as s:
        # requests time out well within the outage: the outcome producer gets replaced
        s.worker_env["OCITAG_KAFKA_REQUEST_TIMEOUT_MS"] = "3000"
        s.start_worker()

        await run(s, outage(s, "kafka"))
        assert s.workers[0].proc.poll() is None, "the worker must ride out a broker outage"
        events = [line["event"] for line in s.workers[0].events()]
        s.report["producer_recreated"] = events.count("producer_recreated")
        record("kafka", seed, s.report)


@pytest.mark.parametrize("seed", SEEDS)
async def test_rebalances_three_one_two(
    local_stack: Services, database_url: str, tmp_path: Path, seed: int
) -> None:
    async with scenario(
        "rebalance", local_stack.kafka_bootstrap, database_url, tmp_path, EVENTS, TAGS, seed
    ) as s:
        for _ in range(3):
            s.start_worker()

        async def scale() -> None:
            for w in s.workers:
                await w.running()
            await asyncio.sleep(2.5)
            for w in s.live()[:2]:  # 3 -> 1, as a Deployment scales down: SIGTERM
                w.proc.send_signal(signal.SIGTERM)
            for w in s.workers[:2]:
                assert await asyncio.to_thread(w.proc.wait, 30) == 0
            await asyncio.sleep(2.5)
            s.start_worker()  # 1 -> 2
            s.fault_ended_at = time.monotonic()

        await run(s, scale())
        assert len(s.live()) == 2
        record("rebalance", seed, s.report)


@pytest.mark.parametrize("seed", SEEDS)
async def test_zombie_frozen_past_the_session_timeout(
    local_stack: Services, database_url: str, tmp_path: Path, seed: int
) -> None:
    async with scenario(
        "zombie", local_stack.kafka_bootstrap, database_url, tmp_path, EVENTS, TAGS, seed
    ) as s:
        zombie = s.start_worker()
        s.start_worker()

        async def freeze() -> None:
            await asyncio.sleep(2.5)
            zombie.proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(10)  # past the 6 s session timeout: its partitions move
            zombie.proc.send_signal(signal.SIGCONT)
            s.fault_ended_at = time.monotonic()

        await run(s, freeze())
        assert zombie.proc.poll() is None
        record("zombie", seed, s.report)


@pytest.mark.parametrize("seed", SEEDS)
async def test_sigterm_drains_and_exits_0(
    local_stack: Services, database_url: str, tmp_path: Path, seed: int
) -> None:
    async with scenario(
        "sigterm", local_stack.kafka_bootstrap, database_url, tmp_path, EVENTS, TAGS, seed
    ) as s:
        first = s.start_worker()

        async def terminate() -> None:
            await first.running()
            await asyncio.sleep(3.0)
            sent = time.monotonic()
            first.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(first.proc.wait, 30)
            s.report["exit_seconds"] = round(time.monotonic() - sent, 2)
            assert code == 0
            assert time.monotonic() - sent < 10 + 5  # the grace period, plus closing
            s.start_worker()
            s.fault_ended_at = time.monotonic()

        await run(s, terminate())
        events = [line["event"] for line in first.events()]
        assert "drained" in events and events[-1] == "stopped"
        record("sigterm", seed, s.report)
