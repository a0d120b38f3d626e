"""Clients nobody on the team wrote, for the interoperability tests: ``kcat``
(librdkafka; ``deploy/local/stack tools --clients`` installs it with apt when run as root),
Kafka's own Java console tools (the ``kafka-tools`` jars the local stack downloads from
Maven Central to run its broker) and ``curl`` for the api.

Locally a missing client skips the tests that need it; under ``CI=true`` they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.services import REPO


class ClientUnavailableError(Exception):
    """The client is not installed here; the message says how to get it."""


def kcat_path() -> str:
    found = shutil.which("kcat")
    if found is None:
        raise ClientUnavailableError(
            "kcat not found: `deploy/local/stack tools --clients` installs it as root, "
            "or apt install kcat"
        )
    return found


def curl_path() -> str:
    found = shutil.which("curl")
    if found is None:
        raise ClientUnavailableError("curl not found: apt install curl")
    return found


def kafka_libs() -> Path:
    """The local stack's Kafka jars (with kafka-tools: the console consumer)."""
    if shutil.which("java") is None:
        raise ClientUnavailableError("java not found: Kafka's console tools need Java 17+")
    libs = Path(os.environ.get("OCITAG_STACK_DIR") or REPO / ".cache" / "stack") / "kafka-libs"
    if not any(libs.glob("kafka-tools-*.jar")):
        raise ClientUnavailableError(f"no kafka-tools jar in {libs}: run deploy/local/stack up")
    return libs


@dataclass(frozen=True)
class KcatRecord:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def kcat_produce(
    bootstrap: str,
    topic: str,
    value_file: Path,
    *,
    key: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> None:
    """One record whose value is the file's bytes (kcat sends a file argument whole)."""
    args = [kcat_path(), "-P", "-b", bootstrap, "-t", topic]
    if key is not None:
        args += ["-k", key]
    for name, value in headers:
        args += ["-H", f"{name}={value}"]
    subprocess.run([*args, str(value_file)], check=True, capture_output=True, timeout=60)


def kcat_consume(bootstrap: str, topic: str) -> list[KcatRecord]:
    """Every record of the topic so far, read with kcat's JSON envelope (-J)."""
    done = subprocess.run(
        [kcat_path(), "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-J"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    records = []
    for line in done.stdout.decode().splitlines():
        envelope = json.loads(line)
        pairs = envelope.get("headers") or []
        headers = [(pairs[i], pairs[i + 1].encode()) for i in range(0, len(pairs), 2)]
        key = envelope.get("key")
        records.append(
            KcatRecord(None if key is None else key.encode(), envelope["payload"].encode(), headers)
        )
    return records


def kcat_read_state(bootstrap: str, topic: str) -> list[tuple[str, str | None, dict[str, str]]]:
    """Every record of a compacted topic so far, as kcat prints it: key, value (None for
    a tombstone: ``-Z`` prints a null value as NULL) and headers, one per line in a
    format of tab-separated fields (``-f``)."""
    args = ["-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-Z"]
    done = subprocess.run(
        [kcat_path(), *args, "-f", "%k\t%s\t%h\n"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    records = []
    for line in done.stdout.decode().splitlines():
        key, value, headers = line.split("\t")
        pairs = dict(pair.split("=", 1) for pair in headers.split(",") if pair)
        records.append((key, None if value == "NULL" else value, pairs))
    return records


def console_consume(bootstrap: str, topic: str, count: int) -> list[str]:
    """``count`` records read from the beginning by Kafka's Java ConsoleConsumer,
    printed as ``headers<TAB>key<TAB>value`` lines."""
    classpath = str(kafka_libs() / "*")
    done = subprocess.run(
        [
            "java",
            "-cp",
            classpath,
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--from-beginning",
            "--max-messages",
            str(count),
            "--timeout-ms",
            "30000",
            "--formatter-property",
            "print.key=true",
            "--formatter-property",
            "print.headers=true",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return done.stdout.decode().splitlines()
