"""Operations on real services: metrics move as events flow, /healthz and /readyz, a
stuck loop turns liveness false, hostile strings are stored verbatim."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.events import HEX, event
from tests.helpers.harness import running_worker, structured
from tests.helpers.metrics import expected_families, scrape_families
from tests.helpers.probes import answering, probe
from tests.helpers.settings_reads import record_reads
from tests.helpers.wait import eventually
from worker.settings import COMMAND_SETTINGS, Settings
from worker.store import event_key

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def scrape(port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


async def test_metrics_move_and_probes_answer(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    settings = make_settings(http_port=port, http_host="127.0.0.1", topic_partitions=1)
    recorded = record_reads(monkeypatch)
    async with running_worker(settings) as worker:
        await eventually(lambda: answering(port, "/readyz"))
        before = await scrape(port)
        await worker.publish(
            [structured(event(f"m{i}", f"2026-11-28T15:00:0{i}Z")) for i in range(5)]
            + [(None, b"garbage", [])]
        )
        await worker.outcomes(6)
        after: dict[str, float] = {}

        async def counted() -> bool:
            after.update(await scrape(port))
            name = "ocitag_event_processing_seconds_count{}"
            return after.get(name, 0) - before.get(name, 0) >= 6

        await eventually(counted)

        async def lag_is_zero() -> bool:
            after.update(await scrape(port))
            return after.get("ocitag_consumer_lag_events{partition=0}") == 0

        await eventually(lag_is_zero)
        status, body = await probe(port, "/healthz")
        shown = await scrape_families(port)
    assert (status, body["status"]) == (200, "ok")
    # the worker's own metrics and the shared ones it moves: no ingest, api or reconcile
    assert {name for name in shown if name.startswith("ocitag_")} == expected_families("run")
    # what the worker read is what its flags and start-up line show
    assert recorded.reads <= COMMAND_SETTINGS["run"]
    assert {"group_id", "max_batch_records", "dlq_topic", "worker_source"} <= recorded.reads

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("ocitag_outcomes_total{change=created,replay=false,status=200}") == 1
    assert delta("ocitag_outcomes_total{change=unchanged,replay=false,status=200}") == 4
    assert delta("ocitag_outcomes_total{change=none,replay=false,status=400}") == 1
    assert delta("ocitag_dead_lettered_total{}") == 1
    assert delta("ocitag_batch_processing_seconds_count{}") >= 1
    assert delta("ocitag_event_processing_seconds_count{}") == 6
    assert after["ocitag_last_commit_timestamp_seconds{}"] > 0
    assert after["ocitag_assigned_partitions{}"] == 1
    assert any(name.startswith("process_resident_memory_bytes") for name in after)
    assert not [name for name in after if "_created" in name]


async def test_stuck_loop_turns_liveness_false(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    settings = make_settings(http_port=port, http_host="127.0.0.1", liveness_timeout_seconds=1.0)
    real = AIOKafkaConsumer.getmany
    stuck = asyncio.Event()

    async def getmany(self: AIOKafkaConsumer, *args: object, **kwargs: object) -> object:
        if stuck.is_set():
            await asyncio.sleep(3600)  # a fetch that never returns
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", getmany)
    task: asyncio.Task[None] | None = None
    async with running_worker(settings) as worker:
        task = worker.task

        await eventually(lambda: answering(port, "/healthz"))
        stuck.set()
        answers: list[tuple[int, dict[str, Any]]] = []

        async def dead() -> bool:
            answers.append(await probe(port, "/healthz"))
            return answers[-1][0] != 200

        await eventually(dead)
        status, body = answers[-1]
        assert status == 503 and body["reason"].startswith("poll-loop has not run for ")
        # the stuck fetch never returns: stop it the way a supervisor would
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        worker.task = asyncio.create_task(asyncio.sleep(0))


async def test_hostile_strings_are_stored_verbatim(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(topic_partitions=1)
    hostile = "'); DROP TABLE ocitags; -- \" \\ $1 %s 🐳 ñ"
    body = event("x'); DELETE FROM processed_events; --", actor=hostile)
    body["source"] = "urn:evil:';--"
    async with running_worker(settings) as worker:
        await worker.publish([structured(body)])
        (outcome,) = await worker.outcomes(1)
    assert outcome.body["status"] == 200
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT created_by FROM ocitags")
        processed = await conn.fetchrow("SELECT key FROM processed_events")
    finally:
        await conn.close()
    assert row is not None and row["created_by"] == hostile
    assert processed is not None
    assert processed["key"] == event_key((body["source"], body["id"]))
    assert outcome.body["data"]["created_by"] == hostile and outcome.body["data"]["artifact"] == HEX
