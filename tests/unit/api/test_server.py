"""The API's routes with fakes behind its two edges (publish, reads): the request-reply
flow, 202 when the outcome is late, 503 when a service is away, the operation labels."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from tests.helpers.producers import wedged_producer
from worker import metrics
from worker.api.auth import parse_tokens
from worker.api.backends import Backends
from worker.api.server import Api
from worker.api.store import Stored
from worker.errors import Cause, TransientError
from worker.kafka import PUBLISHING_INPUT_EVENTS, BrokerUnreachableError, Message, Producer
from worker.settings import load_settings

TOKEN = "unit-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
A = "a" * 64
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
LIMIT = 4096


class FakeReads:
    def __init__(self, stored: Stored | None = None) -> None:
        self.stored = stored
        self.keys: dict[tuple[str, str], datetime] = {}

    async def get(self, repository: str, tag: str) -> Stored | None:
        return self.stored

    async def page(self, repository: str, after: str, limit: int) -> list[Stored]:
        return []

    async def received_at(self, source: str, key: str, now: datetime) -> datetime:
        return self.keys.setdefault((source, key), now)

    async def snapshot(
        self, repository: str | None, after: tuple[str, str], limit: int
    ) -> list[Stored]:
        return []


def applied(event: dict[str, Any], version: int) -> dict[str, Any]:
    """The worker's 200 outcome for ``event``, at ``version``."""
    return {
        "status": 200,
        "causationsource": event["source"],
        "causationid": event["id"],
        "resourceversion": version,
        "data": {"artifact": event["data"]["artifact"]},
    }


class FakeWorker:
    """Publishes into a list; answers each event with an outcome unless told not to."""

    def __init__(self, backends: Backends, *, answer: bool = True, fail: bool = False) -> None:
        self.backends = backends
        self.answer = answer
        self.fail = fail
        self.published: list[dict[str, Any]] = []

    async def publish(self, messages: Sequence[Message]) -> None:
        if self.fail:
            raise TransientError(Cause.KAFKA_TIMEOUT, "broker away")
        for message in messages:
            value = message.value
            assert value is not None
            event = orjson.loads(value)
            self.published.append(event)
            if self.answer:
                outcome = applied(event, len(self.published))
                # the outcome may arrive before the acknowledgement: it must not be missed
                self.backends.waiters.deliver(orjson.dumps(outcome))


@pytest.fixture
async def api() -> AsyncIterator[tuple[TestClient[Any, Any], Backends]]:
    settings = load_settings(
        {"api_timeout_seconds": 0.3, "api_tokens": f"unit:{TOKEN}", "api_max_body_bytes": LIMIT},
        environ={},
    )
    backends = Backends()
    app = Api(settings, parse_tokens(f"unit:{TOKEN}"), backends, lambda: NOW).app()
    async with TestClient(TestServer(app)) as client:
        yield client, backends


async def test_a_put_is_answered_with_its_outcome(
    api: tuple[TestClient[Any, Any], Backends],
) -> None:
    client, backends = api
    worker = FakeWorker(backends)
    backends.publish, backends.reads = worker.publish, FakeReads()
    response = await client.put("/ocitags/nginx:1/", json={"artifact": A}, headers=AUTH)
    assert (response.status, response.headers["ETag"]) == (200, '"1"')
    (event,) = worker.published
    assert event["source"] == "urn:ocitag:api:unit"
    assert event["subject"] == "docker.io/library/nginx:1"
    assert event["time"] == "2026-12-02T10:00:00Z"
    assert len(backends.waiters) == 0


async def test_a_keyed_retry_publishes_the_same_event(
    api: tuple[TestClient[Any, Any], Backends],
) -> None:
    client, backends = api
    worker = FakeWorker(backends)
    reads = FakeReads()
    backends.publish, backends.reads = worker.publish, reads
    headers = {**AUTH, "Idempotency-Key": "k1"}
    reads.keys[("urn:ocitag:api:unit", "k1")] = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(2):
        await client.put("/ocitags/nginx:1/", json={"artifact": A}, headers=headers)
    first, second = worker.published
    assert first == second
    assert (first["id"], first["time"]) == ("k1", "2026-01-01T00:00:00Z")


async def test_a_late_outcome_is_202_with_location(
    api: tuple[TestClient[Any, Any], Backends],
) -> None:
    client, backends = api
    backends.publish, backends.reads = FakeWorker(backends, answer=False).publish, FakeReads()
    before = metrics.API_OUTCOMES_LATE._value.get()
    response = await client.put("/ocitags/a.io%2Fb:1/", json={"artifact": A}, headers=AUTH)
    assert response.status == 202
    assert response.headers["Location"] == "/ocitags/a.io%2Fb:1/"
    assert metrics.API_OUTCOMES_LATE._value.get() == before + 1
    assert len(backends.waiters) == 0


@pytest.mark.parametrize("away", ["kafka", "db", "broker"])
async def test_services_away_are_503_with_retry_after(
    api: tuple[TestClient[Any, Any], Backends], away: str
) -> None:
    client, backends = api
    if away != "kafka":
        backends.publish = FakeWorker(backends, fail=away == "broker").publish
    if away != "db":
        backends.reads = FakeReads()
    headers = {**AUTH, "Idempotency-Key": "k"}
    response = await client.put("/ocitags/nginx:1/", json={"artifact": A}, headers=headers)
    assert response.status == 503
    assert response.headers["Retry-After"] == "2"
    assert response.content_type == "application/problem+json"
    assert len(backends.waiters) == 0


async def test_reads_and_the_operation_label(api: tuple[TestClient[Any, Any], Backends]) -> None:
    client, backends = api
    backends.reads = FakeReads(Stored({"artifact": A}, 4))
    labels = metrics.API_REQUESTS.labels("oci-tag-get", "304")
    before = labels._value.get()
    response = await client.get(
        "/ocitags/docker.io/library/nginx:1/", headers={**AUTH, "If-None-Match": '"4"'}
    )
    assert (response.status, response.headers["ETag"]) == (304, '"4"')
    assert labels._value.get() == before + 1
    missing = await client.get("/nowhere", headers=AUTH)
    assert (missing.status, missing.content_type) == (404, "application/problem+json")
    assert "/nowhere is none of the api's paths" in (await missing.json())["detail"]
    unslashed = await client.get("/ocitags/docker.io/library/nginx:1", headers=AUTH)
    assert unslashed.status == 404
    assert (await unslashed.json())["detail"].endswith(
        "a tag's path ends in '/': /ocitags/docker.io/library/nginx:1/"
    )
    wrong = await client.post("/ocitags/nginx:1/", headers=AUTH)
    assert wrong.status == 405
    assert "PUT" in wrong.headers["Allow"]


async def test_concurrent_writes_each_get_their_own_outcome(
    api: tuple[TestClient[Any, Any], Backends],
) -> None:
    client, backends = api
    worker = FakeWorker(backends)
    backends.publish, backends.reads = worker.publish, FakeReads()
    digests = [f"{n:064x}" for n in range(20)]
    answers = await asyncio.gather(
        *(client.put(f"/ocitags/nginx:t{n}/", json={"artifact": d}, headers=AUTH)
          for n, d in enumerate(digests))
    )  # fmt: skip
    bodies = [await a.json() for a in answers]
    assert [b["artifact"] for b in bodies] == digests


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_limit_is_413_naming_the_setting(
    api: tuple[TestClient[Any, Any], Backends], chunked: bool
) -> None:
    """Not aiohttp's bare "Request Entity Too Large": the limit and the setting that sets
    it, as ingest's 413 says (the size when the client sent Content-Length)."""
    client, backends = api
    backends.publish, backends.reads = FakeWorker(backends).publish, FakeReads()
    body = b" " * (LIMIT + 1)

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    response = await client.put(
        "/ocitags/nginx:1/",
        data=chunks() if chunked else body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status == 413
    problem = await response.json()
    assert problem["detail"] == f"the body is over {LIMIT} bytes (OCITAG_API_MAX_BODY_BYTES)"
    assert problem["errors"] == [
        {
            "location": "body",
            "message": f"must be at most {LIMIT} bytes",
            "value": None if chunked else LIMIT + 1,
        }
    ]


async def _refused(messages: Sequence[Message]) -> None:
    raise BrokerUnreachableError


@pytest.mark.parametrize(
    ("publish", "says"),
    [
        # the producer knew no broker answered: refused before it took the event
        (_refused, "the event was not published"),
        # the producer took it and Kafka did not acknowledge: it may yet be delivered
        (FakeWorker(Backends(), fail=True).publish, "it may still be published and applied"),
    ],
)
async def test_a_503_says_whether_the_event_may_still_be_published(
    api: tuple[TestClient[Any, Any], Backends],
    publish: Callable[[Sequence[Message]], Awaitable[None]],
    says: str,
) -> None:
    client, backends = api
    backends.publish, backends.reads = publish, FakeReads()
    response = await client.put("/ocitags/nginx:1/", json={"artifact": A}, headers=AUTH)
    assert response.status == 503
    assert response.headers["Retry-After"] == "2"
    assert says in (await response.json())["detail"]


async def test_a_publish_past_the_deadline_is_503_and_runs_on_to_its_own_end(
    api: tuple[TestClient[Any, Any], Backends],
) -> None:
    """Past OCITAG_API_TIMEOUT_SECONDS (0.3) the answer is 503, saying the event may still
    land, and the publish is not cancelled: it runs on, and its later failure is its
    own (retrieved: the loop reports nothing). Cancelled, it was a failure nobody saw."""
    client, backends = api
    release = asyncio.Event()
    ended: list[str] = []

    async def publish(messages: Sequence[Message]) -> None:
        try:
            await release.wait()  # Kafka has not acknowledged yet
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise
        ended.append("failed")
        raise TransientError(Cause.KAFKA_TIMEOUT, "not acknowledged within the bound")

    backends.publish, backends.reads = publish, FakeReads()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        started = loop.time()
        response = await client.put("/ocitags/nginx:1/", json={"artifact": A}, headers=AUTH)
        assert response.status == 503
        assert "it may still be published and applied" in (await response.json())["detail"]
        assert 0.25 < loop.time() - started < 2
        assert len(backends.waiters) == 0
        await asyncio.sleep(0.05)
        assert ended == []  # still running after its request answered
        release.set()
        async with asyncio.timeout(5):
            while not ended:
                await asyncio.sleep(0.01)
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert ended == ["failed"]
    assert reported == []


async def test_shutdown_waits_for_the_publishes_left_running_then_cancels_them(
    api: tuple[TestClient[Any, Any], Backends], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its requests have answered, the api's shutdown gives the publishes they left
    running on RUN_ON_GRACE_SECONDS (0.3 here): one acknowledged within it ends as it
    would have, one that is not is cancelled then; none is left pending."""
    client, backends = api
    monkeypatch.setattr("worker.api.writes.RUN_ON_GRACE_SECONDS", 0.3)
    loop = asyncio.get_running_loop()
    closing = loop.create_future()
    ended: list[str] = []

    async def publish(messages: Sequence[Message]) -> None:
        value = messages[0].value or b""
        try:
            await closing
            await asyncio.sleep(0.1 if b"nginx:1" in value else 3600)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise
        ended.append("acknowledged")

    backends.publish, backends.reads = publish, FakeReads()
    for tag in ("nginx:1", "nginx:2"):
        response = await client.put(f"/ocitags/{tag}/", json={"artifact": A}, headers=AUTH)
        assert response.status == 503
    assert ended == []
    started = loop.time()
    closing.set_result(None)
    await asyncio.wait_for(client.close(), 5)
    assert sorted(ended) == ["acknowledged", "cancelled"]
    assert 0.25 < loop.time() - started < 2


async def test_a_producer_that_never_acknowledges_a_write_is_replaced(
    api: tuple[TestClient[Any, Any], Backends], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The api's producer wedged: its write is 503 at the api's deadline (0.3 s), and the
    send goes on to the producer's delivery bound (0.6 s here), whose timeout replaces
    the producer; the next write goes through its successor. Before, the send was
    cancelled at the deadline, counted for nothing, and every write was 503 for ever."""
    client, backends = api
    wedged = wedged_producer(
        monkeypatch, delivery_timeout=0.6, component="the api", action=PUBLISHING_INPUT_EVENTS
    )
    producer, stuck, fresh = wedged.producer, wedged.stuck, wedged.fresh
    recreated = metrics.PRODUCER_RECREATED._value.get()
    worker = FakeWorker(backends)
    backends.publish, backends.reads = producer.send_each, FakeReads()
    try:
        first = await client.put("/ocitags/nginx:1/", json={"artifact": A}, headers=AUTH)
        assert first.status == 503
        async with asyncio.timeout(5):
            while metrics.PRODUCER_RECREATED._value.get() == recreated:
                await asyncio.sleep(0.02)
        await asyncio.gather(*producer._retired)
        backends.publish = _through(producer, worker)
        second = await client.put("/ocitags/nginx:2/", json={"artifact": A}, headers=AUTH)
    finally:
        await producer.stop()
    assert second.status == 200
    assert len(fresh.sent) == 1 and b"nginx:2" in (fresh.sent[0] or b"")
    assert stuck._closed


def _through(
    producer: Producer, worker: FakeWorker
) -> Callable[[Sequence[Message]], Awaitable[None]]:
    """Publish with ``producer``, then have ``worker`` answer the event."""

    async def publish(messages: Sequence[Message]) -> None:
        await producer.send_each(messages)
        await worker.publish(messages)

    return publish


async def test_one_deadline_covers_the_acknowledgement_and_the_outcome(
    api: tuple[TestClient[Any, Any], Backends],
) -> None:
    """An outcome after a slow acknowledgement is waited for only what is left of the
    deadline: an acknowledgement at 0.2 s and an outcome 0.2 s later (past 0.3 s in all)
    is a 202; the same outcome 0.05 s after the acknowledgement is a 200."""
    client, backends = api
    worker = FakeWorker(backends, answer=False)

    def answering(after: float) -> Callable[[Sequence[Message]], Awaitable[None]]:
        async def publish(messages: Sequence[Message]) -> None:
            await asyncio.sleep(0.2)
            await worker.publish(messages)
            event = worker.published[-1]
            outcome = applied(event, len(worker.published))
            loop = asyncio.get_running_loop()
            loop.call_later(after, backends.waiters.deliver, orjson.dumps(outcome))

        return publish

    backends.reads = FakeReads()
    statuses = []
    for after in (0.2, 0.05):
        backends.publish = answering(after)
        response = await client.put("/ocitags/nginx:1/", json={"artifact": A}, headers=AUTH)
        statuses.append(response.status)
    assert statuses == [202, 200]
    assert len(backends.waiters) == 0


@pytest.mark.parametrize(
    "fields",
    [
        [f"Bearer {TOKEN}", "Bearer wrong-token-0123456789"],  # read the first: authenticated
        ["Bearer wrong-token-0123456789", f"Bearer {TOKEN}"],
        [f"Bearer {TOKEN}", f"Bearer {TOKEN}"],
        [f"Bearer {TOKEN}, Bearer wrong-token-0123456789"],  # two, joined by an intermediary
        [f"Bearer {TOKEN},"],
    ],
)
async def test_a_repeated_authorization_header_is_400_naming_it_and_never_authenticates(
    api: tuple[TestClient[Any, Any], Backends], fields: list[str]
) -> None:
    """Authorization is a single-valued field (RFC 9110): aiohttp keeps both fields, and
    the api read the first, so a request carrying a caller's token and another's was
    that caller's. Now 400 naming the header and the rule, its value never echoed."""
    client, backends = api
    worker = FakeWorker(backends)
    backends.publish, backends.reads = worker.publish, FakeReads()
    headers = CIMultiDict(("Authorization", value) for value in fields)
    response = await client.put("/ocitags/nginx:1/", json={"artifact": A}, headers=headers)
    raw = await response.text()
    body = orjson.loads(raw)
    assert response.status == 400
    assert body["type"] == "https://ocitag-worker.dev/problems/malformed-request"
    assert body["errors"] == [
        {
            "location": "header.authorization",
            "message": "must be sent once, holding one value (RFC 9110: a single-valued "
            "field; a comma joins repeated ones)",
            "value": None,
        }
    ]
    assert TOKEN not in raw
    assert worker.published == []
