"""A Kafka outage seen by every long-running command at once: the worker, ingest, the
api and ``outcomes`` run as processes on one set of topics and database, the local
stack's broker is stopped for a while and started again, and what each process said
and answered meanwhile is kept for the tests to judge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.cli import EXE
from tests.helpers.faults import Worker, stack
from tests.helpers.registry import free_port
from tests.helpers.services import REPO
from tests.helpers.wait import eventually

API_TOKEN = "outage-token-0123456789abcdef"
INGEST_SECRET = "outage-ingest-secret"
API_TIMEOUT_SECONDS = 10.0


@dataclass
class Command(Worker):
    """Any command's process (the fault harness's worker process, generalised)."""

    def lines(self) -> list[dict[str, Any]]:
        """Its log lines; one that is not JSON (a traceback, a stray print) as an
        ``unstructured`` event, so that it is counted too."""
        found = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "unstructured", "text": raw}
            found.append(line if isinstance(line, dict) else {"event": "unstructured"})
        return found

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        """Its lines stamped between two Unix times."""
        return [
            line
            for line in self.lines()
            if "timestamp" in line and start <= _unix(line["timestamp"]) <= end
        ]


def _unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Answer:
    status: int
    seconds: float
    headers: dict[str, str]
    body: Any


@dataclass
class Outage:
    """What happened: the broker's stop and start and the commands' SIGTERM (Unix
    times), ingest's readiness reasons, the api's answers, and the processes (their
    logs)."""

    commands: dict[str, Command] = field(default_factory=dict)
    stopped_at: float = 0.0
    started_at: float = 0.0
    #: when the commands were sent SIGTERM: what they log from then on is their shutdown
    signalled_at: float = float("inf")
    ingest_reasons: dict[str, str] = field(default_factory=dict)
    api_reasons: dict[str, str] = field(default_factory=dict)
    api: dict[str, Answer] = field(default_factory=dict)


@dataclass
class Ports:
    ingest: int = field(default_factory=free_port)
    ingest_probes: int = field(default_factory=free_port)
    api: int = field(default_factory=free_port)
    api_probes: int = field(default_factory=free_port)


def command_env(base: dict[str, str], ports: Ports) -> dict[str, str]:
    return {
        **base,
        "OCITAG_LOG_FORMAT": "json",
        "OCITAG_LOG_LEVEL": "info",
        "OCITAG_INGEST_PORT": str(ports.ingest),
        "OCITAG_INGEST_CLOUDEVENTS_SECRET": INGEST_SECRET,
        "OCITAG_API_PORT": str(ports.api),
        "OCITAG_API_TOKENS": f"outage:{API_TOKEN}",
        "OCITAG_API_TIMEOUT_SECONDS": str(API_TIMEOUT_SECONDS),
        "OCITAG_RETRY_BACKOFF_MAX_SECONDS": "2",
        "OCITAG_SESSION_TIMEOUT_MS": "6000",
        "OCITAG_HEARTBEAT_INTERVAL_MS": "1000",
    }


def spawn(name: str, args: list[str], env: dict[str, str], tmp: Path) -> Command:
    """The command with its log (stderr) in ``<name>.log``, its output in ``<name>.out``."""
    log = tmp / f"{name}.log"
    with log.open("wb") as err, (tmp / f"{name}.out").open("wb") as out:
        proc = subprocess.Popen([*EXE, *args], env=env, stdout=out, stderr=err, cwd=REPO)
    return Command(name, proc, log)


async def probe(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def put(port: int, tag: str, artifact: str, key: str) -> Answer:
    """A write through the api, timed (it is answered within its own timeout)."""
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": key}
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=API_TIMEOUT_SECONDS + 20)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.put(
            f"http://127.0.0.1:{port}/ocitags/{tag}/", json={"artifact": artifact}, headers=headers
        ) as response,
    ):
        raw = await response.read()
        return Answer(
            response.status,
            time.monotonic() - started,
            dict(response.headers),
            json.loads(raw) if raw else None,
        )


async def answered(check: Callable[[], Awaitable[bool]]) -> bool:
    """``check()``, False while the process does not answer yet."""
    try:
        return await check()
    except (aiohttp.ClientError, OSError):
        return False


@contextlib.asynccontextmanager
async def running(
    base_env: dict[str, str], tmp: Path, ports: Ports
) -> AsyncIterator[dict[str, Command]]:
    """The worker, ingest, the api and ``outcomes``, until each is serving; SIGTERM and
    wait on exit."""
    env = command_env(base_env, ports)
    commands = {
        "worker": spawn("worker", ["run"], env, tmp),
        "ingest": spawn("ingest", ["ingest", "--http-port", str(ports.ingest_probes)], env, tmp),
        "api": spawn("api", ["api", "--http-port", str(ports.api_probes)], env, tmp),
    }
    try:
        worker = commands["worker"]
        await eventually(lambda: any(x.get("event") == "running" for x in worker.lines()), 120)
        # the worker created the outcome topic that `outcomes` follows
        outcomes = ["outcomes", "--json", "--from-beginning"]
        commands["outcomes"] = spawn("outcomes", outcomes, env, tmp)

        async def ingest_ready() -> bool:
            _, body = await probe(f"http://127.0.0.1:{ports.ingest_probes}/readyz")
            return "kafka connected" in str(body.get("reason"))

        async def api_ready() -> bool:
            return (await probe(f"http://127.0.0.1:{ports.api_probes}/readyz"))[0] == 200

        await eventually(lambda: answered(ingest_ready), 120)
        await eventually(lambda: answered(api_ready), 120)
        yield commands
    finally:
        for command in commands.values():
            if command.proc.poll() is None:
                command.proc.send_signal(signal.SIGTERM)
        for command in commands.values():
            try:
                await asyncio.to_thread(command.proc.wait, 60)
            except subprocess.TimeoutExpired:
                command.proc.kill()
                command.proc.wait()


async def kafka_outage(
    base_env: dict[str, str], tmp: Path, *, seconds: float, artifact: str
) -> Outage:
    """Run every command, stop the broker for at least ``seconds`` while probing ingest
    and writing through the api, start it again, and wait until each process is back."""
    ports = Ports()
    outage = Outage()
    ingest_ready = f"http://127.0.0.1:{ports.ingest_probes}/readyz"
    async with running(base_env, tmp, ports) as commands:
        outage.commands = commands
        outage.api["before"] = await put(ports.api, "outage/app:before", artifact, "before")
        # `outcomes` is consuming once it printed that write's outcome
        printed = tmp / "outcomes.out"
        await eventually(lambda: "app:before" in printed.read_text(), 60)
        outage.stopped_at = time.time()
        await asyncio.to_thread(stack, "kafka-stop")
        try:

            async def ingest_says_unreachable() -> bool:
                _, body = await probe(ingest_ready)
                outage.ingest_reasons["during"] = str(body.get("reason"))
                return "kafka connected" not in outage.ingest_reasons["during"]

            with contextlib.suppress(TimeoutError):  # judged by the tests
                await eventually(ingest_says_unreachable, 15)
            _, body = await probe(f"http://127.0.0.1:{ports.api_probes}/readyz")
            outage.api_reasons["during"] = str(body.get("reason"))
            outage.api["during"] = await put(ports.api, "outage/app:during", artifact, "during")
            await asyncio.sleep(max(0.0, outage.stopped_at + seconds - time.time()))
        finally:
            await asyncio.to_thread(stack, "kafka-start")
            outage.started_at = time.time()

        async def ingest_says_connected() -> bool:
            _, body = await probe(ingest_ready)
            outage.ingest_reasons["after"] = str(body.get("reason"))
            return "kafka connected" in outage.ingest_reasons["after"]

        async def api_writes() -> bool:
            outage.api["after"] = await put(ports.api, "outage/app:after", artifact, "after")
            return outage.api["after"].status == 200

        with contextlib.suppress(TimeoutError):  # judged by the tests
            await eventually(ingest_says_connected, 60)
        with contextlib.suppress(TimeoutError):
            await eventually(api_writes, 90)

        def all_ended() -> bool:
            return all(
                any(x.get("event") == "outage_ended" for x in c.lines()) for c in commands.values()
            )

        with contextlib.suppress(TimeoutError):
            await eventually(all_ended, 60)
        outage.signalled_at = time.time()  # leaving ``running`` sends SIGTERM
    return outage
