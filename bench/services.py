"""The benchmarks' surroundings: the services (like ``make test``: the environment's
servers, else the local stack), throw-away databases and topics, free ports, /proc
readings (memory, CPU of the processes sharing the machine) and the results folder."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from worker.migrate import migrate

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "deploy" / "local" / "stack"
RESULTS = REPO / "bench" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Services:
    kafka: str
    database_url: str  # a server the benchmark may create databases on
    origin: str


def discover() -> Services:
    """KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL when both are set, else the local stack
    (``deploy/local/stack up`` then ``env``), as ``make test`` does."""
    kafka, database = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("DATABASE_URL")
    if kafka and database:
        return Services(kafka, database, "environment")
    print(
        "[bench] KAFKA_BOOTSTRAP_SERVERS/DATABASE_URL not set: starting the local stack",
        file=sys.stderr,
    )
    subprocess.run([str(STACK), "up"], check=True, stdout=sys.stderr)
    out = subprocess.run([str(STACK), "env"], check=True, capture_output=True, text=True).stdout
    values: dict[str, str] = {}
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0] if value else ""
    return Services(values["KAFKA_BOOTSTRAP_SERVERS"], values["DATABASE_URL"], "local stack")


def unique(prefix: str) -> str:
    """A name no other run uses (topics, groups, databases): lower case, [a-z0-9_]."""
    return f"{prefix}_{datetime.now(UTC):%m%d%H%M%S}_{uuid.uuid4().hex[:6]}"


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def with_sslmode(url: str, sslmode: str | None) -> str:
    """``url`` with its ``sslmode`` replaced (None: as it is)."""
    if sslmode is None:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "sslmode"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("sslmode", sslmode)])))


async def create_database(
    server_url: str, name: str, *, migrated: bool = True, up_to: int | None = None
) -> str:
    """A new database, migrated (up to migration ``up_to`` if given) unless told otherwise
    (the floor's has its own tables); returns its URL."""
    admin = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server_url, name)
    if not migrated:
        return url
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, up_to=up_to)
    finally:
        await conn.close()
    return url


async def drop_databases(server_url: str, names: Iterable[str]) -> None:
    admin = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def create_topics(
    kafka: str, names: Iterable[str], partitions: int, configs: Mapping[str, str] | None = None
) -> None:
    """``configs``: topic configurations (none: the broker's defaults)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        topics = [NewTopic(n, partitions, 1, topic_configs=dict(configs or {})) for n in names]
        await admin.create_topics(topics)
    finally:
        await admin.close()


async def delete_topics(kafka: str, names: list[str]) -> None:
    if not names:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---- /proc


def vm_kib(pid: int, field: str) -> int | None:
    """A VmXXX figure of /proc/<pid>/status in KiB (VmHWM = peak RSS, VmRSS = now)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None: it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def system_seconds() -> tuple[float, float, float]:
    """The machine's busy seconds so far; of those the steal: time the hypervisor gave
    this virtual machine's CPUs to someone else (no process of ours ran); and, not
    busy, the iowait: idle CPUs with a process waiting for the disk."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in first]
    idle = values[3] + values[4]  # idle + iowait
    return (
        (sum(values[:8]) - idle) / CLOCK_TICKS,
        values[7] / CLOCK_TICKS,
        values[4] / CLOCK_TICKS,
    )


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listener_pid(port: int) -> int | None:
    """The process listening on a local TCP port (the broker, the postmaster)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(entry.name)
        except OSError:
            continue
    return None


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("PPid:"):
                    if int(line.split()[1]) == parent:
                        found.append(int(entry.name))
                    break
        except OSError:
            continue
    return found


def service_pids(services: Services) -> dict[str, int]:
    """The broker's and the postmaster's pids, when they run on this machine."""
    found = {}
    kafka_port = int(services.kafka.split(",")[0].rsplit(":", 1)[1])
    pg_port = urlsplit(services.database_url).port or 5432
    for name, port in (("kafka", kafka_port), ("postgres", pg_port)):
        pid = listener_pid(port)
        if pid is not None:
            found[name] = pid
    return found


@dataclass
class CpuSnapshot:
    at: float
    system_busy: float
    per_group: dict[str, float]
    steal: float = 0.0


def cpu_snapshot(processes: Mapping[str, int], trees: Mapping[str, int]) -> CpuSnapshot:
    """CPU seconds so far of the named processes (e.g. worker, bench), of the named
    process trees (the broker; the postmaster and its backends), and of the machine."""
    per: dict[str, float] = {name: cpu_seconds(pid) or 0.0 for name, pid in processes.items()}
    for name, root in trees.items():
        per[name] = sum(cpu_seconds(pid) or 0.0 for pid in [root, *_children(root)])
    busy, steal, _ = system_seconds()
    return CpuSnapshot(time.monotonic(), busy, per, steal)


def cpu_usage(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, Any]:
    """Each group's share of the machine between two snapshots, in cores (1.0 = one
    core busy all along); ``other`` is everything else that ran (noise)."""
    wall = max(after.at - before.at, 1e-9)
    cores = {
        name: round(max(0.0, after.per_group[name] - before.per_group.get(name, 0.0)) / wall, 3)
        for name in after.per_group
    }
    total = round((after.system_busy - before.system_busy) / wall, 3)
    # steal slows every process of ours without showing in their CPU times: a figure
    # taken with steal above ~0.05 cores is low for a reason outside the machine
    cores["steal"] = round(max(0.0, after.steal - before.steal) / wall, 3)
    cores["other"] = round(max(0.0, total - sum(cores.values())), 3)
    cores["machine_total"] = total
    cores["cpus"] = os.cpu_count() or 0
    return cores


def code_version() -> dict[str, Any]:
    """The commit the worker under test was built from, and whether worker/ differs."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=10
        )
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "subject": git("log", "-1", "--format=%s") or None,
        "worker_modified": bool(git("status", "--porcelain", "--", "worker")),
    }


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kib = int(meminfo[0].split()[1])
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "load_average_1m_at_start": round(load[0], 2),
        "python": sys.version.split()[0],
    }


# ---- results


def write_results(name: str, results: Mapping[str, Any], directory: Path = RESULTS) -> Path:
    """``<directory>/<name>-<UTC timestamp>.json`` and ``<name>-latest.json`` (for the
    pipeline benchmark, ``<timestamp>.json`` and ``latest.json``)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    prefix = "" if name == "pipeline" else f"{name}-"
    text = json.dumps(results, indent=2, sort_keys=False, default=str) + "\n"
    path = directory / f"{prefix}{stamp}.json"
    path.write_text(text)
    (directory / f"{prefix}latest.json").write_text(text)
    return path


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value.replace("_", "")) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes", "on"}
