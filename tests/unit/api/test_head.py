"""HEAD wherever GET is served (RFC 9110 §9.3.2), with the api's edges faked: the GET's
status and headers (ETag, Content-Type, Content-Length, a problem's too) and no body on
the wire; the GET's operation label; a watch's HEAD admitted like its GET, answered with
the stream's headers, opening no stream and holding no slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.helpers.watchfakes import FakeReads, FakeTopic
from worker import metrics
from worker.api.auth import parse_tokens
from worker.api.backends import Backends
from worker.api.server import Api
from worker.settings import load_settings

TOKEN = "head-token-0123456789abcdef"
REPO = "docker.io/library/nginx"
DIGEST = "sha256:" + "a" * 64
#: what may differ between two answers of one server to one request
_VOLATILE = {"date"}


class Wire:
    """Requests written and answers read as bytes: what a client gets, body or none
    (aiohttp's client reads no body for a HEAD, so it could not tell)."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client

    async def send(
        self, method: str, path: str, token: str | None = TOKEN
    ) -> tuple[int, dict[str, str], bytes]:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        request = f"{method} {path} HTTP/1.1\r\nHost: api\r\n{auth}Connection: close\r\n\r\n"
        reader, writer = await asyncio.open_connection(self.client.host, self.client.port)
        try:
            writer.write(request.encode())
            async with asyncio.timeout(5):  # a HEAD that opened a stream would hang here
                answer = await reader.read(-1)
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return int(status_line.split()[1]), headers, body


@pytest.fixture
async def wire() -> AsyncIterator[tuple[Wire, Api, Backends]]:
    settings = load_settings(
        {"api_tokens": f"head:{TOKEN}", "api_max_watches_per_caller": 1}, environ={}
    )
    backends = Backends()
    api = Api(settings, parse_tokens(f"head:{TOKEN}"), backends, lambda: datetime.now(UTC))
    async with TestClient(TestServer(api.app())) as client:
        reads = FakeReads()
        reads.put(REPO, "1", 4)
        backends.reads = reads
        yield Wire(client), api, backends


PATHS = [
    pytest.param(f"/ocitags/{REPO}:1/", TOKEN, 200, id="a tag"),
    pytest.param(f"/ocitags/{REPO}:none/", TOKEN, 404, id="a missing tag"),
    pytest.param(f"/ocitags/{REPO}:1/", "wrong-token-0123456789", 401, id="a wrong token"),
    pytest.param(f"/ocitags/{REPO}:1/?at=yesterday", TOKEN, 422, id="a bad at"),
    pytest.param(f"/ocitags/?repository={REPO}&limit=1", TOKEN, 200, id="a list"),
    pytest.param(f"/ocitags/{REPO}:1/history", TOKEN, 503, id="history, no database"),
    pytest.param(f"/artifacts/{DIGEST}/tags", TOKEN, 503, id="artifact tags, no database"),
    pytest.param("/openapi.json", None, 200, id="the openapi document"),
    pytest.param("/nowhere", TOKEN, 404, id="no route"),
    pytest.param("/ocitags/?watch=true", TOKEN, 503, id="a watch, no feed"),
]


@pytest.mark.parametrize(("path", "token", "status"), PATHS)
async def test_a_head_is_its_get_without_the_body(
    wire: tuple[Wire, Api, Backends], path: str, token: str | None, status: int
) -> None:
    client = wire[0]
    got, got_headers, got_body = await client.send("GET", path, token)
    head, head_headers, head_body = await client.send("HEAD", path, token)
    assert (got, head) == (status, status)
    assert got_body and head_body == b""
    assert {k: v for k, v in head_headers.items() if k not in _VOLATILE} == {
        k: v for k, v in got_headers.items() if k not in _VOLATILE
    }
    assert int(head_headers["content-length"]) == len(got_body)
    if status == 200 and path.startswith("/ocitags/docker.io"):
        assert head_headers["etag"] == '"4"'
    if status >= 400:
        assert head_headers["content-type"] == "application/problem+json"


async def test_a_head_counts_under_its_gets_operation(wire: tuple[Wire, Api, Backends]) -> None:
    """No new label values: the log line's ``method`` tells a HEAD from a GET."""
    labels = metrics.API_REQUESTS.labels("oci-tag-get", "200")
    before = labels._value.get()
    status, _, _ = await wire[0].send("HEAD", f"/ocitags/{REPO}:1/")
    assert status == 200
    assert labels._value.get() == before + 1


async def test_a_put_only_method_still_lists_head_among_the_allowed(
    wire: tuple[Wire, Api, Backends],
) -> None:
    status, headers, _ = await wire[0].send("POST", f"/ocitags/{REPO}:1/")
    assert status == 405
    assert set(headers["allow"].split(",")) == {"DELETE", "GET", "HEAD", "PUT"}


async def test_a_watch_head_answers_the_streams_headers_and_opens_no_stream(
    wire: tuple[Wire, Api, Backends],
) -> None:
    client, api, backends = wire
    topic = FakeTopic()
    backends.feed = topic
    watchers = metrics.API_WATCHERS._value.get()
    status, headers, body = await client.send("HEAD", f"/ocitags/?watch=true&repository={REPO}")
    assert (status, body) == (200, b"")
    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    # as the stream's: no Content-Length (aiohttp drops a HEAD's Transfer-Encoding)
    assert "content-length" not in headers and headers["x-accel-buffering"] == "no"
    assert (len(topic.fanout), topic.replays) == (0, 0)
    assert len(api.watches.limits) == 0
    assert metrics.API_WATCHERS._value.get() == watchers
    # admitted like its GET: a query the watch refuses, a caller at its limit
    status, _, _ = await client.send("HEAD", "/ocitags/?watch=true&limit=5")
    assert status == 422
    assert api.watches.limits.admit("head") is None  # the caller's one watch
    status, headers, body = await client.send("HEAD", "/ocitags/?watch=true")
    assert (status, headers["content-type"], body) == (429, "application/problem+json", b"")
    api.watches.limits.release("head")
