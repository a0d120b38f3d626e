"""Running the API in-process against a test's topics and database, and calling it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDict

from worker.api.app import ApiProcess
from worker.kafka import ensure_topics
from worker.settings import Settings

TOKEN = "ci-token-0123456789abcdef"
ROTATED_TOKEN = "ci-token-rotated-0123456789"
OTHER_TOKEN = "other-token-0123456789abcdef"
TOKENS = f"ci:{TOKEN},ci:{ROTATED_TOKEN},other:{OTHER_TOKEN}"
DIGEST_A = "a" * 64
DIGEST_B = "b" * 64
DIGEST_C = "c" * 64


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0]


@dataclass
class ApiClient:
    base: str
    session: aiohttp.ClientSession
    token: str | None = TOKEN

    def tag_url(self, ocitag_id: str, *, segments: bool = False) -> str:
        tag = ocitag_id if segments else quote(ocitag_id, safe=":")
        return f"{self.base}/ocitags/{tag}/"

    async def call(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = "",
    ) -> Answer:
        sent = dict(headers or {})
        bearer = self.token if token == "" else token
        if bearer is not None:
            sent["Authorization"] = f"Bearer {bearer}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        async with self.session.request(method, url, data=data, headers=sent) as response:
            return Answer(response.status, CIMultiDict(response.headers), await response.read())

    async def put(self, ocitag_id: str, body: Any, **kwargs: Any) -> Answer:
        return await self.call("PUT", self.tag_url(ocitag_id), json_body=body, **kwargs)

    async def delete(self, ocitag_id: str, **kwargs: Any) -> Answer:
        return await self.call("DELETE", self.tag_url(ocitag_id), **kwargs)

    async def get(self, ocitag_id: str, **kwargs: Any) -> Answer:
        return await self.call("GET", self.tag_url(ocitag_id), **kwargs)


@contextlib.asynccontextmanager
async def running_api(
    settings: Settings, *, ready: bool = True, watch: bool = False
) -> AsyncIterator[ApiClient]:
    """The API's own process object in this event loop; ``ready``: create the topics and
    wait until it has connected to PostgreSQL and Kafka (its outcome listener is at the
    end of the topic); without, Kafka may be unreachable. ``watch``: wait until its
    state-topic feed runs too."""
    if ready:
        await ensure_topics(
            settings,
            [settings.topics.input_topic, settings.topics.outcome_topic, settings.topics.dlq_topic],
        )
        if settings.topics.state_topic:  # the api's watch feed starts at once (no retries)
            await ensure_topics(
                settings,
                [settings.topics.state_topic],
                configs={"cleanup.policy": "compact"},
            )
    process = ApiProcess(settings)
    await process.start()
    try:
        if ready:
            async with asyncio.timeout(30):
                while process.backends.publish is None or process.backends.reads is None:
                    await asyncio.sleep(0.05)
        if watch:  # its state-topic feed runs (the worker creates the topic)
            async with asyncio.timeout(30):
                while process.backends.feed is None:
                    await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as session:
            yield ApiClient(f"http://127.0.0.1:{process.port}", session)
    finally:
        await process.stop()


def api_overrides(**more: Any) -> dict[str, Any]:
    """Settings of an API under test (beside the make_settings fixture's)."""
    values: dict[str, Any] = {
        "api_host": "127.0.0.1",
        "api_port": 0,
        "api_tokens": TOKENS,
        "api_timeout_seconds": 10,
        "prune_interval_seconds": 3600,
    }
    values.update(more)
    return values


def settings_environ(settings: Settings, **flags: Any) -> dict[str, str]:
    """Every setting as the environment variable a subprocess reads it from."""
    import os

    from pydantic import SecretStr

    from worker.settings import env_name

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OCITAG_", "KAFKA_"))}
    environ.pop("DATABASE_URL", None)
    for name in type(settings).FIELDS:
        value = flags.get(name, settings.value(name))
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        environ[env_name(name)] = str(value)
    return environ


#: the commands ``api_processes`` starts by default, each with its own settings
API_COMMANDS: tuple[tuple[str, dict[str, Any]], ...] = (("run", {"http_port": 0}), ("api", {}))


@contextlib.contextmanager
def api_processes(
    settings: Settings,
    log_dir: Any,
    commands: tuple[tuple[str, dict[str, Any]], ...] = API_COMMANDS,
    env: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[None]:
    """``ocitag-worker run`` and ``ocitag-worker api`` (or ``commands``, each with its
    flags) as processes (the API must answer callers that block, such as schemathesis);
    ``env``: more environment per command; their logs go to ``log_dir``."""
    import subprocess
    import sys
    from pathlib import Path

    binary = Path(sys.executable).with_name("ocitag-worker")
    started: list[subprocess.Popen[bytes]] = []
    try:
        for command, flags in commands:
            with (Path(log_dir) / f"{command}.log").open("wb") as out:
                started.append(
                    subprocess.Popen(
                        [str(binary), command],
                        env={**settings_environ(settings, **flags), **(env or {}).get(command, {})},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
