"""A subscriber of the state topic started after the fact (docs/subscribers.md): 10,000
random moves and deletions (with duplicates, late events, invalid and undecodable
records) through two worker replicas, one SIGKILLed and one restarted (SIGTERM) while
the stream flows. Once the workers are idle, the example subscriber
(examples/state_subscriber.py) reads the topic from the beginning and holds exactly
``live_ocitags``, row for row, and ``state verify`` agrees; then the topic is made
compactable, the log cleaner compacts it (fewer records than were written), and a new
subscriber still holds exactly ``live_ocitags``."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.faults import Stream, scenario
from tests.helpers.services import REPO, Services
from tests.helpers.state import alter_topic, live_ocitags, record_counts, run_example_subscriber
from tests.helpers.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 10_000
TAGS = 800
RATE = 2_500.0
#: small segments that roll often: the cleaner only compacts closed segments
SEGMENTS = {
    "cleanup.policy": "compact",
    "segment.ms": "200",
    "segment.bytes": "1048576",  # Kafka 4's smallest
    "min.compaction.lag.ms": "3600000",  # nothing compactable until the second half
}
COMPACT_NOW = {
    "min.compaction.lag.ms": "0",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "0",
}


async def test_a_late_subscriber_holds_live_ocitags_before_and_after_compaction(
    local_stack: Services, database_url: str, tmp_path: Path
) -> None:
    async with scenario(
        "state", local_stack.kafka_bootstrap, database_url, tmp_path, EVENTS, TAGS, seed=23
    ) as s:
        await alter_topic(s.kafka, s.state_topic, SEGMENTS)  # replaces the topic's configs
        rng = random.Random(23)
        first, second = s.start_worker(), s.start_worker()
        await asyncio.gather(first.running(), second.running())

        async def faults() -> None:
            await asyncio.sleep(rng.uniform(2, 4))
            first.proc.send_signal(signal.SIGKILL)  # mid-batch, nothing drained
            first.proc.wait()
            s.start_worker()
            await asyncio.sleep(rng.uniform(1, 3))
            second.proc.send_signal(signal.SIGTERM)  # a restart: drains and exits 0
            await asyncio.to_thread(second.proc.wait, 60)
            s.start_worker()
            s.fault_ended_at = time.monotonic()

        stream = Stream.make(s.seed, s.events, s.tags)
        producing = asyncio.create_task(s.produce(stream, RATE))
        await faults()
        await producing
        await s.wait_drained(len(stream.records), timeout=120)
        await s.verify()  # the outcomes and the rows are the reference model's
        assert first.proc.returncode == -signal.SIGKILL and second.proc.returncode == 0

        live = await live_ocitags(database_url)
        assert live and s.report["deleted"], "the stream made live tags and deletions"
        assert run_example_subscriber(s.kafka, s.state_topic) == live
        written, kept = await record_counts(s.kafka, s.state_topic)
        assert written == kept, "nothing may be compacted yet (min.compaction.lag.ms 1 h)"
        verified = subprocess.run(
            [sys.executable, "-m", "worker", "state", "verify", "--json"],
            env=s.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=REPO,
        )
        assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]

        await alter_topic(s.kafka, s.state_topic, {**SEGMENTS, **COMPACT_NOW})

        async def compacted() -> bool:
            return (await record_counts(s.kafka, s.state_topic))[1] < written

        # the cleaner looks every log.cleaner.backoff.ms (15 s by default)
        await eventually(compacted, timeout=60)
        _, kept = await record_counts(s.kafka, s.state_topic)
        assert run_example_subscriber(s.kafka, s.state_topic) == live
        print(
            f"\nstate topic: {written} records written, {kept} left after compaction, "
            f"{len(live)} live tags, {s.report['deleted']} deletions"
        )
