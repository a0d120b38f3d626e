"""``make run`` on a terminal, stopped with Ctrl-C as a person stops it: every process
drains and exits 0 (the registry too), and so does make; their lines on the terminal are
console lines, not JSON; credentials of its own (not the local defaults) are never
printed. It runs on this test's database and topics and on free ports (the variables
deploy/local/run honours), beside anyone's ``make run``."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import urllib.request
from pathlib import Path

from tests.helpers.registry import free_port
from tests.helpers.services import REPO, Services
from tests.helpers.terminal import Terminal
from tests.helpers.wait import eventually

PROCESSES = ("worker", "ingest", "api", "registry")
LAST_LINE = {"worker": "stopped", "ingest": "stopped", "api": "api_stopped"}
#: someone's own credentials: deploy/local/run's banner must not print them
SECRET = "Bearer test-run-secret-4f1c9a7e"
TOKEN = "test-run-token-8d2b6e0a13579"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _lines_of(output: str, process: str) -> list[str]:
    """What ``process`` printed, without honcho's ``HH:MM:SS name.1 | `` prefix."""
    prefix = re.compile(rf"^\d\d:\d\d:\d\d {re.escape(process)}\.1\s*\| ")
    return [prefix.sub("", line) for line in output.splitlines() if prefix.match(line)]


async def test_ctrl_c_stops_every_process_with_0_and_make_run_exits_0(
    services: Services,
    database_url: str,
    topic_prefix: str,
    registry_tools: Path,
) -> None:
    ports = {name: free_port() for name in ("worker", "ingest", "api", "ingest_hooks", "api_http")}
    registry_port = free_port()
    venv = Path(sys.prefix)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OCITAG_LOG")},
        "VENV": str(venv),
        "KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
        "DATABASE_URL": database_url,
        "OCITAG_TOOLS_DIR": str(registry_tools),
        "OCITAG_INPUT_TOPIC": f"{topic_prefix}.events",
        "OCITAG_OUTCOME_TOPIC": f"{topic_prefix}.outcomes",
        "OCITAG_DLQ_TOPIC": f"{topic_prefix}.events.dlq",
        "OCITAG_STATE_TOPIC": f"{topic_prefix}.state",
        "OCITAG_GROUP_ID": f"{topic_prefix}-group",
        "OCITAG_TOPIC_PARTITIONS": "1",
        "OCITAG_TOPIC_REPLICATION_FACTOR": "1",
        "OCITAG_LOCAL_WORKER_HTTP_PORT": str(ports["worker"]),
        "OCITAG_LOCAL_INGEST_HTTP_PORT": str(ports["ingest"]),
        "OCITAG_LOCAL_API_HTTP_PORT": str(ports["api"]),
        "OCITAG_INGEST_PORT": str(ports["ingest_hooks"]),
        "OCITAG_API_PORT": str(ports["api_http"]),
        "OCITAG_LOCAL_REGISTRY_PORT": str(registry_port),
        "OCITAG_INGEST_DISTRIBUTION_SECRET": SECRET,
        "OCITAG_INGEST_CLOUDEVENTS_SECRET": SECRET,
        "OCITAG_API_TOKENS": f"local:{TOKEN}",
        "TERM": "dumb",
    }
    # make as a person runs it; the venv is the one running this test (-o: not reinstalled)
    terminal = Terminal(["make", "-o", f"{venv}/.installed", "run"], REPO, env)
    try:
        ready = [f"http://127.0.0.1:{ports[p]}/readyz" for p in ("worker", "ingest", "api")]
        ready.append(f"http://127.0.0.1:{registry_port}/v2/")

        def all_ready() -> bool:
            assert terminal.process.poll() is None, f"make run ended:\n{terminal.output()}"
            return all(_answers(url) for url in ready)

        await eventually(all_ready, timeout=180)
        terminal.interrupt()
        code = await asyncio.to_thread(terminal.wait, 60)
    finally:
        terminal.close()

    output = terminal.output()
    assert code == 0, output
    assert "make: ***" not in output, output
    assert SECRET.split()[1] not in output and TOKEN not in output, output
    assert "(a token of OCITAG_API_TOKENS)" in output, output
    assert "(Authorization: from OCITAG_INGEST_DISTRIBUTION_SECRET)" in output, output
    for process in PROCESSES:
        assert re.search(rf"system\s*\| {process}\.1 stopped \(rc=0\)$", output, re.M), output
    for process, event in LAST_LINE.items():
        lines = _lines_of(output, process)
        assert lines, output
        assert not any(line.startswith("{") for line in lines), lines  # console, not JSON
        assert re.search(rf"\[info\s*\] {event}\b", lines[-1]), lines[-5:]
