"""Each PUT's round trip split between the worker and the API (issue "Close to the
floor": the api's added time against the worker's, in one run).

For every PUT the benchmark knows its round trip and its artifact (one new digest per
PUT). A consumer of the input and outcome topics reads, per artifact, the Kafka
timestamp (CreateTime, set by the producer) of the event the API produced and of the
outcome the worker produced for it. Then, per PUT:

- **worker** = outcome created - event created: the broker's hop to the worker, its
  batch (decode, store, outcome) up to the outcome's send;
- **api added** = round trip - worker: the HTTP request and answer, the API's own work,
  its produce up to the record's creation, and the outcome's way back (the
  acknowledgement, the API's outcome consumer) — what a caller pays beyond the worker;
  in two parts, from the PUT's sending (wall clock): **in** = event created - PUT sent
  (the request's way in, up to the producer's send), **out** = answer read - outcome
  created (the outcome's linger and append, the API's fetch, the answer's way out).

Both clocks are this machine's, in milliseconds (Kafka timestamps): each figure is
±1 ms. The percentiles are of the per-PUT values (a p99 of differences, not a
difference of p99s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.report import percentile


def _artifact(value: bytes | None) -> str | None:
    """The digest (hex, without algorithm) a tag-moved event or a 200 outcome names."""
    try:
        body: dict[str, Any] = json.loads(value or b"")
        artifact = body["data"]["artifact"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(artifact).rsplit(":", 1)[-1]


class Split:
    """Reads the creation times of events and outcomes while PUTs run."""

    def __init__(self, kafka: str, input_topic: str, outcome_topic: str, partitions: int):
        self._kafka = kafka
        self._tps = [
            TopicPartition(topic, p)
            for topic in (input_topic, outcome_topic)
            for p in range(partitions)
        ]
        self._input = input_topic
        self.created: dict[str, int] = {}  # artifact → the event's Kafka timestamp (ms)
        self.answered: dict[str, int] = {}  # artifact → the 200 outcome's (ms)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._missing: set[str] | None = None  # outcomes awaited at the end
        self._complete = asyncio.Event()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._kafka, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        consumer.assign(self._tps)
        await consumer.seek_to_end(*self._tps)
        for tp in self._tps:
            await consumer.position(tp)
        self._consumer = consumer
        self._task = asyncio.create_task(self._read(consumer))

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                into = self.created if tp.topic == self._input else self.answered
                for record in records:
                    artifact = _artifact(record.value)
                    if artifact is not None:
                        into.setdefault(artifact, record.timestamp)
            self._check()

    def _check(self) -> None:
        if self._missing is not None:
            self._missing -= self.answered.keys()
            if not self._missing:
                self._complete.set()

    async def stop(self, artifacts: Sequence[str], within: float = 10.0) -> None:
        """Once every given artifact's outcome was read (or ``within`` seconds)."""
        self._missing = set(artifacts)
        self._check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._complete.wait(), within)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def summary(self, puts: Sequence[tuple[str, float, float]]) -> dict[str, Any]:
        """``puts``: (artifact, round trip in seconds, sent at in Unix seconds) of each
        PUT answered."""
        worker: list[float] = []
        added: list[float] = []
        way_in: list[float] = []
        way_out: list[float] = []
        for artifact, seconds, sent_at in puts:
            created, answered = self.created.get(artifact), self.answered.get(artifact)
            if created is None or answered is None:
                continue
            worker.append(float(answered - created))
            added.append(seconds * 1000 - (answered - created))
            way_in.append(created - sent_at * 1000)
            way_out.append((sent_at + seconds) * 1000 - answered)
        for values in (worker, added, way_in, way_out):
            values.sort()

        def pct(values: list[float], p: float) -> float | None:
            return round(percentile(values, p), 1) if values else None

        return {
            "api_in_p50_ms": pct(way_in, 50),
            "api_in_p99_ms": pct(way_in, 99),
            "api_out_p50_ms": pct(way_out, 50),
            "api_out_p99_ms": pct(way_out, 99),
            "split_matched": len(worker),
            "split_puts": len(puts),
            "worker_split_p50_ms": pct(worker, 50),
            "worker_split_p99_ms": pct(worker, 99),
            "api_added_p50_ms": pct(added, 50),
            "api_added_p99_ms": pct(added, 99),
            "api_added_max_ms": round(added[-1], 1) if added else None,
        }
