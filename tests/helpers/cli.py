"""The console script as a subprocess, with the environment of a test's settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from tests.helpers.wait import eventually
from worker.settings import Settings

EXE = [sys.executable, "-m", "worker"]


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OCITAG_", "KAFKA_", "DATABASE_"))
    }
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka.kafka_bootstrap_servers,
        DATABASE_URL=settings.database.database_url.get_secret_value(),
        OCITAG_INPUT_TOPIC=settings.topics.input_topic,
        OCITAG_OUTCOME_TOPIC=settings.topics.outcome_topic,
        OCITAG_DLQ_TOPIC=settings.topics.dlq_topic,
        OCITAG_STATE_TOPIC=settings.topics.state_topic,
        OCITAG_GROUP_ID=settings.kafka.group_id,
        OCITAG_HTTP_PORT="0",
        OCITAG_TOPIC_PARTITIONS="2",
        OCITAG_LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


async def stopped_by_sigterm(command: str, env: dict[str, str], port: int) -> tuple[int, str, str]:
    """Start a long-running ``command``, wait until it listens on ``port``, send SIGTERM:
    its exit code, stdout and stderr."""
    process = subprocess.Popen(
        [*EXE, command], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        await eventually(lambda: listening(port), timeout=60)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stdout, stderr = process.communicate()
    return process.returncode, stdout, stderr


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
