"""The API against the running worker on real Kafka and PostgreSQL: every status of
PUT and DELETE, reads with ETag/304, paging, a late outcome (202), a broker outage (503).
Every answer is checked against the seed's OCITag or ErrorModel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.helpers.api import (
    DIGEST_A,
    DIGEST_B,
    DIGEST_C,
    OTHER_TOKEN,
    ROTATED_TOKEN,
    Answer,
    api_overrides,
    running_api,
)
from tests.helpers.contract import errors_of, seed_validator
from tests.helpers.faults import stack
from tests.helpers.harness import running_worker, structured
from tests.helpers.services import Services
from tests.helpers.wait import eventually
from worker.api.store import PgReads
from worker.encode import build_event
from worker.problems import ProblemKind
from worker.settings import Settings
from worker.timefmt import format_rfc3339

pytestmark = pytest.mark.integration

HAS_DELETIONS = hasattr(ProblemKind, "NOT_FOUND")
needs_deletions = pytest.mark.skipif(
    not HAS_DELETIONS, reason="the worker does not apply ocitag.deleted.v1 yet (deletions)"
)


def record_of(answer: Answer) -> dict[str, Any]:
    """A 200's body: the seed's OCITag, as application/json, with an ETag."""
    assert answer.status == 200, (answer.status, answer.raw)
    assert answer.content_type == "application/json"
    assert errors_of(seed_validator("OCITag"), answer.body) == []
    assert answer.headers["ETag"].startswith('"')
    body: dict[str, Any] = answer.body
    return body


def problem_of(answer: Answer, status: int) -> dict[str, Any]:
    """A problem's body: the seed's ErrorModel, as application/problem+json."""
    assert answer.status == status, (answer.status, answer.raw)
    assert answer.content_type == "application/problem+json"
    assert errors_of(seed_validator("ErrorModel"), answer.body) == []
    assert answer.body["status"] == status
    body: dict[str, Any] = answer.body
    return body


def locations(problem: dict[str, Any]) -> set[str]:
    return {e["location"] for e in problem.get("errors") or []}


def slug(problem: dict[str, Any]) -> str:
    return str(problem["type"]).rsplit("/", 1)[-1]


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**api_overrides())


async def test_put_answers_with_the_outcome(settings: Settings) -> None:
    tag = "docker.io/team/app:1.0"
    async with running_worker(settings), running_api(settings) as api:
        created = await api.put(tag, {"artifact": f"sha256:{DIGEST_A}", "actor": "alice"})
        record = record_of(created)
        assert created.headers["ETag"] == '"1"'
        assert record["artifact"] == DIGEST_A  # stored in the seed's form
        assert (record["repository"], record["tag"]) == ("docker.io/team/app", "1.0")
        assert record["created_by"] == record["last_modified_by"] == "alice"

        unchanged = await api.put(tag, {"artifact": DIGEST_A})
        assert record_of(unchanged)["last_modified_by"] == "urn:ocitag:api:ci"
        assert unchanged.headers["ETag"] == '"2"'

        # slashes as path segments name the same tag
        updated = await api.call(
            "PUT", api.tag_url(tag, segments=True), json_body={"artifact": DIGEST_B}
        )
        assert record_of(updated)["artifact"] == DIGEST_B
        assert updated.headers["ETag"] == '"3"'

        # If-Match is expected_version
        stale = problem_of(
            await api.put(tag, {"artifact": DIGEST_C}, headers={"If-Match": '"2"'}), 412
        )
        assert slug(stale) == "precondition-failed"
        assert locations(stale) == {"header.if-match"}
        fresh = await api.put(tag, {"artifact": DIGEST_C}, headers={"If-Match": '"3"'})
        assert fresh.headers["ETag"] == '"4"'

        # If-None-Match: * is "must not exist"
        exists = problem_of(
            await api.put(tag, {"artifact": DIGEST_A}, headers={"If-None-Match": "*"}), 412
        )
        assert locations(exists) == {"header.if-none-match"}
        new = await api.put(
            "docker.io/team/app:2.0", {"artifact": DIGEST_A}, headers={"If-None-Match": "*"}
        )
        assert new.headers["ETag"] == '"1"'

        # previous_artifact
        moved = problem_of(
            await api.put(tag, {"artifact": DIGEST_A, "previous_artifact": DIGEST_B}), 412
        )
        assert locations(moved) == {"body.previous_artifact"}
        assert record_of(await api.put(tag, {"artifact": DIGEST_A, "previous_artifact": DIGEST_C}))

        # what the API answered is what the worker stored
        read = await api.get(tag)
        assert record_of(read)["artifact"] == DIGEST_A
        assert read.headers["ETag"] == '"5"'


async def test_idempotency_key_gives_the_same_answer_and_409_for_another_body(
    settings: Settings,
) -> None:
    tag = "ghcr.io/org/svc:v1"
    key = {"Idempotency-Key": "deploy-42"}
    async with running_worker(settings), running_api(settings) as api:
        first = await api.put(tag, {"artifact": DIGEST_A}, headers=key)
        record_of(first)
        again = await api.put(tag, {"artifact": DIGEST_A}, headers=key)
        assert (again.status, again.raw, again.headers["ETag"]) == (
            first.status,
            first.raw,
            first.headers["ETag"],
        )
        # the caller's rotated token names the same caller: still the same request
        rotated = await api.put(tag, {"artifact": DIGEST_A}, headers=key, token=ROTATED_TOKEN)
        assert (rotated.status, rotated.raw) == (first.status, first.raw)
        # another caller's key is another event
        other = await api.put(tag, {"artifact": DIGEST_A}, headers=key, token=OTHER_TOKEN)
        assert record_of(other)["last_modified_by"] == "urn:ocitag:api:other"

        reused = problem_of(await api.put(tag, {"artifact": DIGEST_B}, headers=key), 409)
        assert slug(reused) == "id-reused"
        assert record_of(await api.get(tag))["artifact"] == DIGEST_A


async def test_superseded_write_is_409(settings: Settings) -> None:
    tag = "quay.io/org/db:15"
    later = format_rfc3339(datetime.now(UTC) + timedelta(hours=1))
    newer = build_event(tag, DIGEST_B, source="urn:test", event_id="future", time=later)
    async with running_worker(settings) as worker, running_api(settings) as api:
        await worker.publish([structured(newer, tag.encode())])
        await worker.outcomes(1)
        superseded = problem_of(await api.put(tag, {"artifact": DIGEST_A}), 409)
        assert slug(superseded) == "superseded"
        assert record_of(await api.get(tag))["artifact"] == DIGEST_B


@pytest.mark.parametrize(
    ("path_tag", "body", "headers", "status", "where"),
    [
        ("docker.io/Team/app:1", {"artifact": DIGEST_A}, {}, 422, {"path.tag"}),
        ("docker.io/team/app", {"artifact": DIGEST_A}, {}, 422, {"path.tag"}),
        ("docker.io/team/app:-bad", {"artifact": DIGEST_A}, {}, 422, {"path.tag"}),
        ("docker.io/team/app:1", {"artifact": "sha256:xyz"}, {}, 422, {"body.artifact"}),
        ("docker.io/team/app:1", {}, {}, 422, {"body.artifact"}),
        ("docker.io/team/app:1", {"artifact": 7}, {}, 422, {"body.artifact"}),
        ("docker.io/team/app:1", {"artifact": DIGEST_A, "actor": ""}, {}, 422, {"body.actor"}),
        (
            "docker.io/team/app:1",
            {"artifact": DIGEST_A, "previous_artifact": "nope"},
            {},
            422,
            {"body.previous_artifact"},
        ),
        (
            "docker.io/team/app:1",
            {"artifact": DIGEST_A, "expected_version": 1},
            {},
            422,
            {"body.expected_version"},
        ),
        ("docker.io/team/app:1", [DIGEST_A], {}, 422, {"body"}),
        (
            "docker.io/team/app:1",
            {"artifact": DIGEST_A},
            {"If-Match": "3"},
            422,
            {"header.if-match"},
        ),
        (
            "docker.io/team/app:1",
            {"artifact": DIGEST_A},
            {"If-None-Match": '"3"'},
            422,
            {"header.if-none-match"},
        ),
        (
            "docker.io/team/app:1",
            {"artifact": DIGEST_A},
            {"Idempotency-Key": "x" * 257},
            422,
            {"header.idempotency-key"},
        ),
        (
            "docker.io/team/app:1",
            {"artifact": "bad", "actor": "", "extra": 1},
            {},
            422,
            {"body.artifact", "body.actor", "body.extra"},
        ),
    ],
)
async def test_invalid_writes_name_each_field(
    settings: Settings,
    path_tag: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    where: set[str],
) -> None:
    # no worker: a request that breaks a rule is answered before anything is published
    async with running_api(settings) as api:
        problem = problem_of(await api.put(path_tag, body, headers=headers), status)
        assert slug(problem) == "invalid-request"
        assert locations(problem) == where


async def test_malformed_bodies_and_auth(settings: Settings) -> None:
    url_tag = "docker.io/team/app:1"
    async with running_api(settings) as api:
        url = api.tag_url(url_tag)
        json_type = {"Content-Type": "application/json"}
        not_json = problem_of(await api.call("PUT", url, data=b"{nope", headers=json_type), 400)
        assert locations(not_json) == {"body"}
        text = problem_of(
            await api.call("PUT", url, data=b"x", headers={"Content-Type": "text/plain"}), 415
        )
        assert locations(text) == {"header.content-type"}
        big = await api.call(
            "PUT", url, data=b" " * 20_000, headers={"Content-Type": "application/json"}
        )
        assert "(OCITAG_API_MAX_BODY_BYTES)" in problem_of(big, 413)["detail"]

        for token in (None, "wrong-token-0123456789", OTHER_TOKEN + "x"):
            for method in ("PUT", "DELETE", "GET"):
                answer = await api.call(method, url, json_body={"artifact": DIGEST_A}, token=token)
                unauthorized = problem_of(answer, 401)
                assert set(unauthorized) == {"type", "title", "status"}  # no detail
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        listing = await api.call("GET", f"{api.base}/ocitags/?repository=x", token=None)
        problem_of(listing, 401)
        document = await api.call("GET", f"{api.base}/openapi.json", token=None)
        assert document.status == 200
        assert document.body["openapi"] == "3.1.0"


async def test_reads_with_etag_and_paging(settings: Settings) -> None:
    repository = "registry.example.com/team/app"
    tags = [f"v{n}" for n in range(5)]
    async with running_worker(settings), running_api(settings) as api:
        for tag in tags:
            record_of(await api.put(f"{repository}:{tag}", {"artifact": DIGEST_A}))
        answer = await api.get(f"{repository}:v3")
        record_of(answer)
        etag = answer.headers["ETag"]
        not_modified = await api.get(f"{repository}:v3", headers={"If-None-Match": etag})
        assert (not_modified.status, not_modified.raw, not_modified.headers["ETag"]) == (
            304,
            b"",
            etag,
        )
        weak = await api.get(f"{repository}:v3", headers={"If-None-Match": f'"9", W/{etag}'})
        assert weak.status == 304
        record_of(await api.get(f"{repository}:v3", headers={"If-None-Match": '"9"'}))

        missing = problem_of(await api.get(f"{repository}:nope"), 404)
        assert slug(missing) == "not-found"
        problem_of(await api.get("not a tag"), 422)

        seen: list[str] = []
        url = f"{api.base}/ocitags/?repository={repository}&limit=2"
        pages = 0
        while True:
            page = await api.call("GET", url)
            assert page.status == 200
            for item in page.body["items"]:
                assert errors_of(seed_validator("OCITag"), item) == []
            seen += [item["tag"] for item in page.body["items"]]
            pages += 1
            if page.body["next"] is None:
                assert "Link" not in page.headers
                break
            assert page.headers["Link"].endswith('rel="next"')
            url = f"{api.base}{page.headers['Link'].split(';')[0].strip('<>')}"
        assert (seen, pages) == (tags, 3)

        bad = problem_of(
            await api.call(
                "GET", f"{api.base}/ocitags/?repository={repository}&cursor=zzz&limit=0"
            ),
            422,
        )
        assert locations(bad) == {"query.cursor", "query.limit"}
        problem_of(await api.call("GET", f"{api.base}/ocitags/"), 422)


@needs_deletions
async def test_delete_answers_with_the_outcome(settings: Settings) -> None:
    tag = "docker.io/team/gone:1"
    async with running_worker(settings), running_api(settings) as api:
        missing = problem_of(await api.delete(tag), 404)
        assert slug(missing) == "not-found"
        record_of(await api.put(tag, {"artifact": DIGEST_A}))
        stale = problem_of(await api.delete(tag, headers={"If-Match": '"7"'}), 412)
        assert locations(stale) == {"header.if-match"}
        deleted = await api.delete(tag, headers={"Idempotency-Key": "rm-1"})
        assert record_of(deleted)["artifact"] == DIGEST_A  # the record as it was
        again = await api.delete(tag, headers={"Idempotency-Key": "rm-1"})
        assert (again.status, again.raw) == (deleted.status, deleted.raw)
        problem_of(await api.get(tag), 404)
        listed = await api.call("GET", f"{api.base}/ocitags/?repository=docker.io/team/gone")
        assert listed.body == {"items": [], "next": None}  # tombstones are not listed
        problem_of(await api.delete(tag), 404)
        reused = problem_of(
            await api.put(tag, {"artifact": DIGEST_A}, headers={"Idempotency-Key": "rm-1"}), 409
        )
        assert slug(reused) == "id-reused"


async def test_late_outcome_is_202_then_applied(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(**api_overrides(api_timeout_seconds=1.5))
    tag = "docker.io/team/late:1"
    async with running_api(settings) as api:  # no worker yet
        accepted = await api.put(tag, {"artifact": DIGEST_A})
        assert accepted.status == 202
        assert accepted.content_type == "application/json"
        location = accepted.headers["Location"]
        assert location == "/ocitags/docker.io%2Fteam%2Flate:1/"
        assert accepted.body["source"] == "urn:ocitag:api:ci"
        problem_of(await api.get(tag), 404)
        async with running_worker(settings):

            async def applied() -> bool:
                return (await api.call("GET", api.base + location)).status == 200

            await eventually(applied)
        record_of(await api.call("GET", api.base + location))


async def test_broker_away_is_503(
    services: Services, make_settings: Callable[..., Settings]
) -> None:
    if not services.can_restart:
        pytest.skip("only the local stack can stop its broker")
    settings = make_settings(**api_overrides(api_timeout_seconds=3))
    tag = "docker.io/team/outage:1"
    async with running_worker(settings), running_api(settings) as api:
        record_of(await api.put(tag, {"artifact": DIGEST_A}))
        stack("kafka-stop")
        try:
            away = await api.put(tag, {"artifact": DIGEST_B})
            problem = problem_of(away, 503)
            assert slug(problem) == "unavailable"
            assert int(away.headers["Retry-After"]) >= 1
            assert record_of(await api.get(tag))["artifact"] == DIGEST_A  # reads go on
        finally:
            stack("kafka-start")

        async def writes_again() -> bool:
            answer = await api.put(
                tag, {"artifact": DIGEST_C}, headers={"Idempotency-Key": "after"}
            )
            return answer.status == 200

        await eventually(writes_again, timeout=120)
        assert record_of(await api.get(tag))["artifact"] == DIGEST_C


async def test_outcomes_of_other_producers_are_ignored(settings: Settings) -> None:
    """Outcomes of events the API did not publish (another replica's, anybody's) reach no
    waiter and change no answer."""
    tag = "docker.io/team/mixed:1"
    async with running_worker(settings) as worker, running_api(settings) as api:
        foreign = [
            structured(build_event(tag, DIGEST_B, source="urn:ocitag:api:ci", event_id=f"x{n}"))
            for n in range(3)
        ]
        await worker.publish(foreign)
        answer = await api.put(tag, {"artifact": DIGEST_C}, headers={"Idempotency-Key": "mine"})
        assert json.loads(answer.raw)["artifact"] == DIGEST_C


async def test_idempotency_key_times_are_kept_once_and_pruned(pool: asyncpg.Pool) -> None:
    reads = PgReads(pool)
    first = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert await reads.received_at("urn:ocitag:api:ci", "k", first) == first
    later = first + timedelta(minutes=5)
    assert await reads.received_at("urn:ocitag:api:ci", "k", later) == first
    assert await reads.received_at("urn:ocitag:api:other", "k", later) == later
    assert await reads.prune(3600) == 2  # both older than an hour (2026-01-01)
    assert await reads.received_at("urn:ocitag:api:ci", "k", later) == later


async def test_two_replicas_each_answer_their_own_requests(settings: Settings) -> None:
    """Both replicas read every outcome; each answers its requests and ignores the
    other's (same caller, so the same source: only the ids tell them apart)."""
    tags = [f"docker.io/team/replica:{n}" for n in range(10)]
    async with running_worker(settings), running_api(settings) as one, running_api(settings) as two:
        answers = await asyncio.gather(
            *(
                (one if n % 2 else two).put(tag, {"artifact": f"{n:064x}"})
                for n, tag in enumerate(tags)
            )
        )
        assert [record_of(a)["artifact"] for a in answers] == [f"{n:064x}" for n in range(10)]
        assert [record_of(a)["tag"] for a in answers] == [t.rsplit(":", 1)[1] for t in tags]
