"""Grants and the rate limit on the api's routes, with its two edges faked: a request
outside the grants is 403 before any lookup or publish; a list shows only what the
caller may read and still moves forward page by page; over the limit is 429 with
Retry-After, nothing published."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from worker.api.access import Access
from worker.api.auth import parse_tokens
from worker.api.backends import Backends
from worker.api.grants import parse_grants
from worker.api.listing import MAX_SCANS
from worker.api.ratelimit import RateLimit, RateLimiter
from worker.api.server import Api
from worker.api.store import Stored
from worker.kafka import Message
from worker.settings import load_settings

A = "a" * 64
TEAM_A = "team-a-token-0123456789"
NOBODY = "nobody-token-0123456789"
TOKENS = f"team-a:{TEAM_A},nobody:{NOBODY}"
GRANTS = {
    "team-a": [
        {"actions": ["read", "write"], "tags": ["registry.example.com/app:keep-*"]},
        {"actions": ["delete"], "tags": ["registry.example.com/app:tmp-*"]},
    ]
}
REPO = "registry.example.com/app"


class Reads:
    """A repository whose tags are ``keep-N`` and ``hide-N`` interleaved."""

    def __init__(self, tags: list[str]) -> None:
        self.tags = sorted(tags)
        self.lookups = 0
        self.queries = 0

    async def get(self, repository: str, tag: str) -> Stored | None:
        self.lookups += 1
        return Stored({"repository": repository, "tag": tag, "artifact": A}, 1)

    async def page(self, repository: str, after: str, limit: int) -> list[Stored]:
        self.queries += 1
        rows = [t for t in self.tags if t > after][:limit]
        return [Stored({"repository": repository, "tag": t, "artifact": A}, 1) for t in rows]

    async def received_at(self, source: str, key: str, now: datetime) -> datetime:
        return now

    async def snapshot(
        self, repository: str | None, after: tuple[str, str], limit: int
    ) -> list[Stored]:
        return await self.page(repository or "r", after[1], limit)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class Setup:
    def __init__(self, client: TestClient[Any, Any], reads: Reads, clock: Clock) -> None:
        self.client, self.reads, self.clock = client, reads, clock
        self.published: list[Message] = []

    async def publish(self, messages: Sequence[Message]) -> None:
        self.published.extend(messages)

    async def call(self, method: str, path: str, token: str = TEAM_A) -> tuple[int, Any, Any]:
        response = await self.client.request(
            method, path, json={"artifact": A}, headers={"Authorization": f"Bearer {token}"}
        )
        body = await response.read()
        return response.status, json.loads(body) if body else None, response.headers


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    settings = load_settings(
        {"api_timeout_seconds": 0.2, "api_tokens": TOKENS, "api_grants": json.dumps(GRANTS)},
        environ={},
    )
    clock = Clock()
    access = Access(parse_grants(json.dumps(GRANTS)), RateLimiter(RateLimit(5, 1.0), clock))
    backends = Backends()
    reads = Reads([f"{kind}-{n:02}" for n in range(12) for kind in ("hide", "keep")])
    app = Api(settings, parse_tokens(TOKENS), backends, lambda: datetime.now(UTC), access).app()
    async with TestClient(TestServer(app)) as client:
        setup = Setup(client, reads, clock)
        backends.publish, backends.reads = setup.publish, reads
        yield setup


@pytest.mark.parametrize(
    ("method", "tag", "status"),
    [
        ("PUT", "keep-1", 202),  # allowed: published, outcome late (no worker here)
        ("PUT", "hide-1", 403),
        ("DELETE", "keep-1", 403),
        ("DELETE", "tmp-1", 202),
        ("GET", "keep-1", 200),
        ("GET", "hide-1", 403),
    ],
)
async def test_each_action_inside_and_outside_the_grants(
    setup: Setup, method: str, tag: str, status: int
) -> None:
    got, body, _ = await setup.call(method, f"/ocitags/{REPO}:{tag}/")
    assert got == status
    if status == 403:
        assert body["type"] == "https://ocitag-worker.dev/problems/forbidden"
        assert body["errors"][0]["location"] == "path.tag"
        assert (setup.published, setup.reads.lookups) == ([], 0)  # nothing looked up or sent


async def test_a_caller_without_grants_may_only_read_the_openapi_document(setup: Setup) -> None:
    for method, path in [
        ("GET", f"/ocitags/{REPO}:keep-1/"),
        ("PUT", f"/ocitags/{REPO}:keep-1/"),
        ("DELETE", f"/ocitags/{REPO}:keep-1/"),
        ("GET", f"/ocitags/?repository={REPO}"),
    ]:
        assert (await setup.call(method, path, NOBODY))[0] == 403, (method, path)
    assert (await setup.client.get("/openapi.json")).status == 200
    assert setup.published == []


async def test_a_list_shows_only_what_the_caller_may_read_page_by_page(setup: Setup) -> None:
    seen: list[str] = []
    path: str | None = f"/ocitags/?repository={REPO}&limit=5"
    while path is not None:
        setup.clock.now += 1
        status, body, _ = await setup.call("GET", path)
        assert status == 200
        seen += [item["tag"] for item in body["items"]]
        cursor = body["next"]
        path = f"/ocitags/?repository={REPO}&limit=5&cursor={cursor}" if cursor else None
    assert seen == [f"keep-{n:02}" for n in range(12)]


async def test_a_page_with_nothing_visible_still_moves_forward(setup: Setup) -> None:
    setup.reads.tags = [f"hide-{n:03}" for n in range(100)] + ["keep-1"]
    status, body, _ = await setup.call("GET", f"/ocitags/?repository={REPO}&limit=2")
    assert (status, body["items"]) == (200, [])
    assert body["next"] is not None and setup.reads.queries == MAX_SCANS
    for _ in range(20):  # follow the cursor: the visible record comes, then the end
        if body["next"] is None:
            break
        cursor = body["next"]
        setup.clock.now += 1  # within the rate limit
        _, body, _ = await setup.call("GET", f"/ocitags/?repository={REPO}&limit=2&cursor={cursor}")
        if body["items"]:
            assert [i["tag"] for i in body["items"]] == ["keep-1"]
    assert body["next"] is None


async def test_over_the_rate_limit_is_429_with_retry_after_and_nothing_published(
    setup: Setup,
) -> None:
    answers = [await setup.call("GET", f"/ocitags/{REPO}:keep-1/") for _ in range(5)]
    assert {status for status, _, _ in answers} == {200}
    status, body, headers = await setup.call("PUT", f"/ocitags/{REPO}:keep-1/")
    assert (status, headers["Retry-After"]) == (429, "1")
    assert body["type"] == "https://ocitag-worker.dev/problems/rate-limited"
    assert setup.published == []
    assert (await setup.call("GET", f"/ocitags/{REPO}:keep-1/", NOBODY))[0] == 403  # own bucket
    setup.clock.now += 0.2
    assert (await setup.call("GET", f"/ocitags/{REPO}:keep-1/"))[0] == 200


async def test_a_head_is_guarded_and_counted_like_its_get(setup: Setup) -> None:
    """Outside the grants 403 (its problem's headers, no body, nothing looked up); a
    HEAD takes from the caller's rate limit like the GET it mirrors."""
    status, body, headers = await setup.call("HEAD", f"/ocitags/{REPO}:hide-1/")
    assert (status, body, headers["Content-Type"]) == (403, None, "application/problem+json")
    assert int(headers["Content-Length"]) > 0 and setup.reads.lookups == 0
    for _ in range(4):
        assert (await setup.call("HEAD", f"/ocitags/{REPO}:keep-1/"))[0] == 200
    status, body, headers = await setup.call("HEAD", f"/ocitags/{REPO}:keep-1/")
    assert (status, body, headers["Retry-After"]) == (429, None, "1")


def test_the_openapi_document_describes_403_and_429_on_every_guarded_operation() -> None:
    from worker.api.openapi import document

    doc = document()
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            if method == "parameters" or path == "/openapi.json":
                continue
            assert {"403", "429"} <= operation["responses"].keys(), (path, method)
    too_many = doc["components"]["responses"]["TooManyRequests"]
    assert "Retry-After" in too_many["headers"]
    assert orjson.dumps(doc)  # still one JSON document
