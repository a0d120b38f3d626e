"""Grants and the rate limit against the running api and worker on real Kafka and
PostgreSQL: each action inside and outside the grants, for two callers over three
repositories; a 403 publishes nothing (the input topic is read); a caller without grants
gets nothing but the OpenAPI document; lists are filtered per tag; a burst over the rate
limit gets 429s with Retry-After and every accepted request its outcome."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from tests.helpers.api import DIGEST_A, OTHER_TOKEN, TOKEN, TOKENS, api_overrides, running_api
from tests.helpers.harness import records_on, running_worker
from worker.settings import Settings

pytestmark = pytest.mark.integration

NO_GRANTS_TOKEN = "no-grants-token-0123456789"
TEAM_A, TEAM_B, SHARED = (
    "registry.example.com/team-a/app",
    "registry.example.com/team-b/app",
    "registry.example.com/shared/base",
)
GRANTS = {
    "ci": [
        {"actions": ["read", "write", "delete"], "tags": ["registry.example.com/team-a/**"]},
        {"actions": ["read", "write"], "tags": ["registry.example.com/shared/**"]},
    ],
    "other": [
        {"actions": ["read", "write"], "tags": ["registry.example.com/team-b/**"]},
        {"actions": ["read", "write"], "tags": ["registry.example.com/shared/**:v*"]},
    ],
}
#: (caller, repository) → the actions the grants allow on its tag v1
ALLOWED = {
    ("ci", TEAM_A): {"read", "write", "delete"},
    ("ci", TEAM_B): set(),
    ("ci", SHARED): {"read", "write"},
    ("other", TEAM_A): set(),
    ("other", TEAM_B): {"read", "write"},
    ("other", SHARED): {"read", "write"},
}
TOKEN_OF = {"ci": TOKEN, "other": OTHER_TOKEN}


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        **api_overrides(
            api_tokens=f"{TOKENS},nogrants:{NO_GRANTS_TOKEN}", api_grants=json.dumps(GRANTS)
        )
    )


async def test_each_action_inside_and_outside_the_grants(settings: Settings) -> None:
    topic = settings.topics.input_topic
    async with running_worker(settings), running_api(settings) as api:
        for action in ("write", "read", "delete"):  # written first: reads find a record
            for (caller, repository), allowed in ALLOWED.items():
                before = await records_on(settings, topic)
                tag, token = f"{repository}:v1", TOKEN_OF[caller]
                if action == "write":
                    answer = await api.put(tag, {"artifact": DIGEST_A}, token=token)
                elif action == "read":
                    answer = await api.get(tag, token=token)
                else:
                    answer = await api.delete(tag, token=token)
                where = (caller, action, repository, answer.status, answer.raw)
                if action in allowed:
                    assert answer.status in (200, 404), where  # 404: deleted or never there
                    continue
                assert answer.status == 403, where
                assert answer.body["type"].endswith("/forbidden"), where
                assert answer.body["errors"][0]["location"] == "path.tag"
                assert await records_on(settings, topic) == before, where  # nothing published


async def test_a_caller_without_grants_gets_only_the_openapi_document(settings: Settings) -> None:
    async with running_worker(settings), running_api(settings) as api:
        before = await records_on(settings, settings.topics.input_topic)
        tag = f"{TEAM_A}:v1"
        answers = [
            await api.put(tag, {"artifact": DIGEST_A}, token=NO_GRANTS_TOKEN),
            await api.delete(tag, token=NO_GRANTS_TOKEN),
            await api.get(tag, token=NO_GRANTS_TOKEN),
            await api.call(
                "GET", f"{api.base}/ocitags/?repository={TEAM_A}", token=NO_GRANTS_TOKEN
            ),
        ]
        assert [a.status for a in answers] == [403] * 4
        assert (await api.call("GET", f"{api.base}/openapi.json", token=None)).status == 200
        assert await records_on(settings, settings.topics.input_topic) == before


async def test_the_list_shows_each_caller_only_what_it_may_read(settings: Settings) -> None:
    async with running_worker(settings), running_api(settings) as api:
        for tag in ("main", "v1", "v2", "x-nightly"):
            answer = await api.put(f"{SHARED}:{tag}", {"artifact": DIGEST_A})  # ci writes
            assert answer.status == 200, answer.raw

        async def listed(token: str) -> list[str]:
            tags: list[str] = []
            cursor: str | None = ""
            while cursor is not None:
                url = f"{api.base}/ocitags/?repository={SHARED}&limit=1"
                answer = await api.call("GET", url + (f"&cursor={cursor}" if cursor else ""),
                                        token=token)  # fmt: skip
                assert answer.status == 200, answer.raw
                tags += [item["tag"] for item in answer.body["items"]]
                cursor = answer.body["next"]
            return tags

        assert await listed(TOKEN) == ["main", "v1", "v2", "x-nightly"]
        assert await listed(OTHER_TOKEN) == ["v1", "v2"]


async def test_a_burst_over_the_rate_limit(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(**api_overrides(api_rate_limit="5/30"))
    async with running_worker(settings) as worker, running_api(settings) as api:
        answers = await asyncio.gather(
            *(api.put(f"{TEAM_A}:burst-{n}", {"artifact": DIGEST_A}) for n in range(12))
        )
        accepted = [a for a in answers if a.status == 200]
        limited = [a for a in answers if a.status == 429]
        assert (len(accepted), len(limited)) == (5, 7), [a.status for a in answers]
        for answer in limited:
            assert int(answer.headers["Retry-After"]) >= 1
            assert answer.body["type"].endswith("/rate-limited")
        # only the accepted were published, and each has its outcome
        assert await records_on(settings, settings.topics.input_topic) == 5
        outcomes = await worker.outcomes(5)
        assert {o.body["status"] for o in outcomes} == {200}
        # another caller has its own bucket
        assert (
            await api.put(f"{TEAM_A}:other", {"artifact": DIGEST_A}, token=OTHER_TOKEN)
        ).status == 200
