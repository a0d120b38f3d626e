"""Jaeger all-in-one as the tests' trace store (``deploy/local/stack jaeger-start``,
in memory), the environment that turns a command's tracing on towards it, and its
HTTP query API read back as plain spans."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.helpers.registry import STACK

OTLP_PORT = int(os.environ.get("OCITAG_JAEGER_OTLP_PORT", "14318"))
QUERY_PORT = int(os.environ.get("OCITAG_JAEGER_QUERY_PORT", "16686"))


class JaegerUnavailableError(Exception):
    """Jaeger could not be built or started; the message says why."""


def start_jaeger() -> str:
    """Build Jaeger if it is not (or wait for the build .ci/run started in the background:
    the tools lock), start it (idempotent); its query API's base URL."""
    built = subprocess.run(
        [str(STACK), "tools", "--jaeger"], capture_output=True, text=True, check=False, timeout=3000
    )
    if built.returncode != 0:
        raise JaegerUnavailableError(
            f"deploy/local/stack tools --jaeger failed:\n{built.stderr[-3000:]}"
        )
    done = subprocess.run(
        [str(STACK), "jaeger-start"], capture_output=True, text=True, check=False, timeout=120
    )
    if done.returncode != 0:
        raise JaegerUnavailableError(f"deploy/local/stack jaeger-start failed:\n{done.stderr}")
    return f"http://127.0.0.1:{QUERY_PORT}"


def tracing_env(service: str) -> dict[str, str]:
    """A command's environment for tracing everything to the test's Jaeger as ``service``
    (spans exported within 0.2 s, so the test need not wait 5 s per batch)."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{OTLP_PORT}",
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


def run_id() -> str:
    """A suffix for the services of one test: Jaeger keeps every run's traces."""
    return uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class Span:
    """One span of a trace as Jaeger's query API returns it."""

    span_id: str
    service: str
    name: str
    start_us: int
    duration_us: int
    parent: str | None
    links: tuple[str, ...]
    tags: dict[str, Any] = field(hash=False)

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us


def spans_of(trace: dict[str, Any]) -> list[Span]:
    """A Jaeger JSON trace's spans: the parent (CHILD_OF) and the links (FOLLOWS_FROM,
    as Jaeger shows OpenTelemetry links) by span id."""
    processes = trace["processes"]
    found = []
    for raw in trace["spans"]:
        refs = raw.get("references", [])
        parent = next((r["spanID"] for r in refs if r["refType"] == "CHILD_OF"), None)
        links = tuple(r["spanID"] for r in refs if r["refType"] == "FOLLOWS_FROM")
        found.append(
            Span(
                raw["spanID"],
                processes[raw["processID"]]["serviceName"],
                raw["operationName"],
                raw["startTime"],
                raw["duration"],
                parent,
                links,
                {t["key"]: t["value"] for t in raw.get("tags", [])},
            )
        )
    return found


async def traces(query_url: str, service: str) -> list[dict[str, Any]]:
    """Every trace Jaeger holds with a span of ``service`` (the last hour)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{query_url}/api/traces", params={"service": service, "limit": "50"}) as r,
    ):
        if r.status == 404 or r.status >= 500:
            return []  # the service has no span yet
        body = await r.json()
    data: list[dict[str, Any]] = body.get("data") or []
    return data
