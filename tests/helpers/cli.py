"""The console script as a subprocess, with the environment of a test's settings."""

from __future__ import annotations

import os
import subprocess
import sys

from worker.settings import Settings

EXE = [sys.executable, "-m", "worker"]


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OCITAG_", "KAFKA_", "DATABASE_"))
    }
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        DATABASE_URL=settings.database_url.get_secret_value(),
        OCITAG_INPUT_TOPIC=settings.input_topic,
        OCITAG_OUTCOME_TOPIC=settings.outcome_topic,
        OCITAG_DLQ_TOPIC=settings.dlq_topic,
        OCITAG_GROUP_ID=settings.group_id,
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
