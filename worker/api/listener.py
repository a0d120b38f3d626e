"""The one consumer of the outcome topic per API process: no consumer group (every
replica reads every partition; there is nothing to commit), all partitions assigned,
starting at their end when the process starts. Each outcome goes to ``Waiters``.

Request-reply without per-request consumers or database polling: a request waits on a
future; this loop resolves it when the outcome arrives.
"""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from worker import tracing
from worker.api.waiters import Waiters
from worker.consumerstop import stop_consumer
from worker.errors import describe
from worker.health import OUTCOME_LISTENER, Health
from worker.kafka import client_options, start_whole
from worker.settings import Settings

log = structlog.get_logger("worker.api.listener")
_PARTITION_CHECK_SECONDS = 30.0
_ERROR_PAUSE_SECONDS = 1.0


class OutcomeListener:
    def __init__(self, settings: Settings, waiters: Waiters, health: Health) -> None:
        self._settings = settings
        self._waiters = waiters
        self._health = health
        self._consumer = every_partition_consumer(settings, "ocitag-api-outcomes", reset="latest")
        self._assigned: set[TopicPartition] = set()
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        """Connect, assign every partition at its end, and resolve those positions, so
        that no outcome of a request published after this returns can be missed."""
        await start_whole(self._consumer.start, self._consumer.stop)
        await self._assign_all()
        self._ready = True

    async def _assign_all(self) -> None:
        topic = self._settings.topics.outcome_topic
        partitions = await topic_partitions(self._settings, topic)
        if not partitions:
            raise LookupError(f"topic {topic} has no partitions (OCITAG_OUTCOME_TOPIC)")
        wanted = {TopicPartition(topic, p) for p in partitions}
        if wanted == self._assigned:
            return
        new = wanted - self._assigned
        # assign() forgets positions: keep those of the partitions read so far
        kept = {tp: await self._consumer.position(tp) for tp in self._assigned}
        self._consumer.assign(sorted(wanted))
        if kept:
            # partitions added while running hold nothing older than this process's writes
            await self._consumer.seek_to_beginning(*new)
            for tp, offset in kept.items():
                self._consumer.seek(tp, offset)
        else:
            await self._consumer.seek_to_end(*new)
        for tp in sorted(wanted):
            await self._consumer.position(tp)
        self._assigned = wanted

    async def run(self) -> None:
        """Deliver outcomes until cancelled; a broker outage is waited out (the client
        reconnects by itself). Beats each turn, outcomes or not (getmany returns empty
        after its timeout), errors included: a loop that turns is alive."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + _PARTITION_CHECK_SECONDS
        while True:
            self._health.beat(OUTCOME_LISTENER)
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=2_000)
                tracer = tracing.current()
                for records in batches.values():
                    for record in records:
                        if self._waiters.deliver(record.value) and tracer is not None:
                            tracer.delivered(record.topic, record.headers)
                if loop.time() >= next_check:
                    next_check = loop.time() + _PARTITION_CHECK_SECONDS
                    # asks the cluster (up to its request timeout): waiting for Kafka
                    self._health.waiting(OUTCOME_LISTENER, "Kafka")
                    await self._assign_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outcome_listener_error", error=describe(exc))
                await asyncio.sleep(_ERROR_PAUSE_SECONDS)

    async def stop(self) -> None:
        self._ready = False
        await stop_consumer(self._consumer, "outcome listener", grouped=False)


def every_partition_consumer(
    settings: Settings, client_id: str, *, reset: str = "earliest"
) -> AIOKafkaConsumer:
    """A consumer of the api's: no group (assigned every partition, nothing to commit),
    fetches answered at once (a record waits for no batch to fill)."""
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset=reset,
        fetch_max_wait_ms=50,
        client_id=client_id,
    )


async def topic_partitions(settings: Settings, topic: str) -> set[int]:
    """The topic's partitions, from the cluster (a consumer only knows what it was
    assigned)."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10_000)
    try:
        await start_whole(admin.start, admin.close)
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {
        int(p["partition"])
        for t in described
        if t.get("topic") == topic and not t.get("error_code")
        for p in t.get("partitions", [])
    }
