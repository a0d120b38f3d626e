"""A worker stopped (SIGTERM) while its broker does not answer exits within its own
bounds: its consumer's stop (leaving the group) is given up after
worker/consumerstop.py's CONSUMER_STOP_SECONDS, its producer's after STOP_SECONDS, and the
process exits 0 well inside a Deployment's grace period. Before, the consumer's stop
waited for the LeaveGroup answer for its whole request timeout (40 s)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.helpers.faults import broker_frozen, scenario
from tests.helpers.services import Services
from tests.helpers.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.faults]

#: the drain's grace (2 s) + the consumer's stop (5 s) and the close after it (2 x 1 s) +
#: the producer's stop and abort (3 x 2 s) + closing the pool and the probes (a loaded
#: machine's seconds)
EXIT_BOUND_SECONDS = 2 + 5 + 2 + 6 + 5


async def test_a_worker_stopped_while_its_broker_does_not_answer_exits_within_its_bounds(
    local_stack: Services, database_url: str, tmp_path: Path
) -> None:
    async with scenario(
        "frozenstop", local_stack.kafka_bootstrap, database_url, tmp_path, 0, 1, 1
    ) as s:
        s.worker_env["OCITAG_SHUTDOWN_GRACE_SECONDS"] = "2"
        worker = s.start_worker()
        await worker.running()
        # a member of the group: its stop has a group to leave
        await eventually(
            lambda: any(e.get("event") == "partitions_assigned" for e in worker.events()), 60
        )
        with broker_frozen():
            sent = time.monotonic()
            worker.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(worker.proc.wait, 90)
            seconds = time.monotonic() - sent
        events = worker.events()
        assert seconds < EXIT_BOUND_SECONDS, (seconds, [e.get("event") for e in events])
        assert code == 0
        abandoned = [e for e in events if e.get("event") == "consumer_stop_abandoned"]
        assert [(e["consumer"], e["level"]) for e in abandoned] == [("input", "warning")]
        assert abandoned[0]["partitions"]  # what it held, named
        assert events[-1]["event"] == "stopped"
