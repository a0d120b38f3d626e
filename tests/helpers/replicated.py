"""The local stack's replicated mode (``deploy/local/stack up --brokers 3 --standby``) for
the fault scenarios of tests/faults/test_replicated.py: three KRaft nodes and a
PostgreSQL primary with a streaming standby, in a cache dir and on ports of their own,
so that they run beside the single-node stack the other tests use.

``OCITAG_REPLICATED_STACK_DIR`` (default ``.cache/stack-replicated``),
``OCITAG_REPLICATED_KAFKA_PORT`` (19192: the nodes take 19192, 19202, 19212 and the
port after each for their controllers) and ``OCITAG_REPLICATED_PG_PORT`` (15442, the
standby the next one) choose them.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from tests.helpers.services import REPO, STACK, UnavailableError, with_database
from worker.migrate import migrate

STACK_DIR = Path(
    os.environ.get("OCITAG_REPLICATED_STACK_DIR", REPO / ".cache" / "stack-replicated")
)
OFFSETS_TOPIC = "__consumer_offsets"
KAFKA_PORT = int(os.environ.get("OCITAG_REPLICATED_KAFKA_PORT", "19192"))
PG_PORT = int(os.environ.get("OCITAG_REPLICATED_PG_PORT", "15442"))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCITAG_KAFKA_", "OCITAG_PG_"))}
    env.update(
        OCITAG_STACK_DIR=str(STACK_DIR),
        OCITAG_KAFKA_PORT=str(KAFKA_PORT),
        OCITAG_PG_PORT=str(PG_PORT),
        OCITAG_PG_STANDBY_PORT=str(PG_PORT + 1),
    )
    return env


def stack(*args: str, timeout: float = 240) -> float:
    """Run ``deploy/local/stack`` on the replicated stack; the seconds it took."""
    started = time.monotonic()
    done = subprocess.run(
        [str(STACK), *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"stack {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started


@dataclass(frozen=True)
class Replicated:
    """The running replicated stack: its bootstrap (three brokers) and its multi-host
    ``DATABASE_URL`` (``target_session_attrs=read-write``: whichever node is primary)."""

    kafka: str
    database_url: str

    def kill_broker(self, node: int) -> None:
        stack("kill-broker", str(node))

    def start_broker(self, node: int) -> float:
        return stack("start-broker", str(node))

    async def restart_broker(self, node: int, topics: list[str]) -> float:
        """Start ``node`` again; the seconds until every partition of ``topics`` has all
        three replicas in sync (the cluster whole again)."""
        started = time.monotonic()
        await asyncio.to_thread(stack, "start-broker", str(node), "--no-wait")
        await self.wait_min_in_sync(topics, 3)
        return time.monotonic() - started

    async def wait_min_in_sync(
        self, topics: list[str], replicas: int, dead: frozenset[int] = frozenset()
    ) -> float:
        """Seconds until every partition of ``topics`` has a leader and ``replicas`` in
        sync, none of them a ``dead`` node (the metadata names a dead leader until the
        controller fences it)."""
        started = time.monotonic()
        while time.monotonic() - started < 180:
            try:
                if await self._in_sync(topics, replicas, dead):
                    return time.monotonic() - started
            except Exception:
                pass
            await asyncio.sleep(0.5)
        raise AssertionError(f"{topics}: not {replicas} replicas in sync within 180 s")

    async def _in_sync(self, topics: list[str], replicas: int, dead: frozenset[int]) -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka, request_timeout_ms=5000)
        await admin.start()
        try:
            described = await admin.describe_topics(topics)
        finally:
            await admin.close()
        return all(
            p["leader"] >= 0 and p["leader"] not in dead and len(set(p["isr"]) - dead) >= replicas
            for t in described
            for p in t["partitions"]
        )

    def pg_kill(self) -> None:
        stack("pg-kill", "primary")

    def promote(self, *, keep_sync: bool = False) -> float:
        return stack("promote", *(["--keep-sync"] if keep_sync else []))

    def pg_rebuild(self, *, asynchronous: bool = False) -> float:
        """A fresh primary and standby (a promotion leaves the old primary dead)."""
        return stack("pg-rebuild", *(["--async"] if asynchronous else []))

    async def leader(self, topic: str, partition: int) -> int | None:
        """The node leading ``topic``'s ``partition`` now (None: no leader)."""
        leaders = await self._leaders(topic)
        return leaders.get(partition)

    async def coordinator(self) -> int | None:
        """The node coordinating every consumer group now: the leader of
        ``__consumer_offsets``, which the replicated stack makes one partition
        (``offsets.topic.num.partitions=1``), so every group's coordinator is its leader."""
        leaders = await self._leaders(OFFSETS_TOPIC)
        assert set(leaders) == {0}, f"{OFFSETS_TOPIC} has partitions {sorted(leaders)}"
        return leaders[0]

    async def _leaders(self, topic: str) -> dict[int, int | None]:
        """Each partition of ``topic`` and the node leading it now (None: no leader)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka, request_timeout_ms=5000)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return {
            int(p["partition"]): int(p["leader"]) if int(p["leader"]) >= 0 else None
            for p in described["partitions"]
        }

    async def wait_leader_other_than(self, topic: str, partition: int, old: int) -> float:
        """Seconds until ``topic``'s ``partition`` has a leader that is not ``old``."""
        started = time.monotonic()
        while time.monotonic() - started < 60:
            try:
                leader = await self.leader(topic, partition)
            except Exception:
                leader = None
            if leader is not None and leader != old:
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        raise AssertionError(f"{topic}[{partition}] had no new leader within 60 s")

    async def fresh_database(self) -> str:
        """A new migrated database on the current primary; its multi-host URL."""
        name = f"ocitag_rep_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(with_database(self.database_url, "postgres"))
        try:
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()
        url = with_database(self.database_url, name)
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        return url


def replicated_stack() -> Replicated:
    """Start (or find running) the replicated stack, synchronous standby."""
    try:
        stack("up", "--brokers", "3", "--standby", timeout=400)
    except (AssertionError, subprocess.TimeoutExpired) as exc:
        raise UnavailableError(str(exc)) from exc
    out = subprocess.run(
        [str(STACK), "env"], env=_env(), capture_output=True, text=True, check=True
    ).stdout
    values = {}
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0] if value else ""
    return Replicated(values["KAFKA_BOOTSTRAP_SERVERS"], values["DATABASE_URL"])
