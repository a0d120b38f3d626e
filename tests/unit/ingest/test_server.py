"""The receiver over real HTTP (aiohttp's test server), with the event sink and digest
resolver faked behind their Protocols: status codes, problem bodies, what is sent."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from tests.helpers.ingest import load_delivery
from worker.errors import Cause, TransientError
from worker.ingest.gate import Enabled
from worker.ingest.kinds import KINDS, Auth, KindSpec
from worker.ingest.mapping import Handshake, Ignored, Mapped, TagChange
from worker.ingest.server import IngestServer, Limits
from worker.kafka import Message

TOKEN = "Bearer s3cret"
ART = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.calls = 0
        self.error: Exception | None = None
        self.hang = False

    async def send_all(self, messages: Sequence[Message]) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.error is not None:
            raise self.error
        self.sent.extend(messages)


class FakeResolver:
    def __init__(self, digests: Mapping[str, str]) -> None:
        self.digests = dict(digests)

    async def resolve_digest(self, repository: str, tag: str) -> str | None:
        return self.digests.get(f"{repository}:{tag}")


def _no_digest(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    return [
        TagChange("moved", "docker.io/org/app", "v1", None, "d-1",
                 datetime(2026, 1, 1, tzinfo=UTC), "urn:ocitag:ingest:dockerhub:docker.io"),
        Ignored("other_action", "x"),
    ]  # fmt: skip


def _handshake(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    return [Handshake({"validationResponse": "abc"})]


def _signed(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    return [Ignored("ping")]


def _limits(**change: Any) -> Limits:
    values: dict[str, Any] = {
        "topic": "ocitag.events",
        "max_body_bytes": 8192,
        "read_timeout": 5.0,
        "deadline": 0.3,
        "retry_after": 7,
        "problem_base_uri": "https://ocitag-worker.dev/problems/",
    }
    values.update(change)
    return Limits(**values)


class Setup:
    def __init__(self, client: TestClient[Any, Any], sink: FakeSink) -> None:
        self.client = client
        self.sink = sink


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    sink = FakeSink()
    kinds = {
        "distribution": Enabled(KINDS["distribution"], (b"Bearer old", TOKEN.encode())),
        "cloudevents": Enabled(KINDS["cloudevents"], (TOKEN.encode(),)),
        "dockerhub": Enabled(KindSpec("dockerhub", Auth.PATH, _no_digest), (b"path-secret",)),
        "acr": Enabled(KindSpec("acr", Auth.HEADER, _handshake), (TOKEN.encode(),)),
        "github": Enabled(KindSpec("github", Auth.HUB_SIGNATURE, _signed), (b"gh",)),
    }
    resolver = FakeResolver({"docker.io/org/app:v1": f"sha256:{ART}"})
    server = IngestServer(kinds, sink, resolver, _limits())
    client = TestClient(TestServer(server.app()))
    await client.start_server()
    try:
        yield Setup(client, sink)
    finally:
        await client.close()


async def post(
    setup: Setup, path: str, body: bytes, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    response = await setup.client.post(path, data=body, headers=dict(headers or {}))
    return response.status, json.loads(await response.read()), response.headers


def fixture(name: str) -> bytes:
    return load_delivery("distribution", name)[0]


async def test_accepted_delivery_lists_published_and_ignored(setup: Setup) -> None:
    status, body, _ = await post(
        setup, "/webhooks/distribution", fixture("batch-push"), {"Authorization": TOKEN}
    )
    assert status == 200
    assert [p["subject"] for p in body["published"]] == [
        "127.0.0.1:45285/team/app:v1",
        "127.0.0.1:45285/team/app:v2",
    ]
    assert [i["reason"] for i in body["ignored"]] == ["blob", "blob", "pull"]
    assert [m.key for m in setup.sink.sent] == [
        b"127.0.0.1:45285/team/app:v1",
        b"127.0.0.1:45285/team/app:v2",
    ]
    sent_ids = [json.loads(m.value or b"")["id"] for m in setup.sink.sent]
    assert sent_ids == [p["id"] for p in body["published"]]


async def test_a_retried_delivery_sends_the_same_bytes(setup: Setup) -> None:
    for _ in range(2):
        status, _, _ = await post(
            setup, "/webhooks/distribution", fixture("push-tag"), {"Authorization": "Bearer old"}
        )
        assert status == 200
    first, second = setup.sink.sent
    assert first == second


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/webhooks/distribution", {}),
        ("/webhooks/distribution", {"Authorization": "Bearer wrong"}),
        ("/webhooks/distribution/Bearer%20s3cret", {}),
        ("/webhooks/dockerhub/wrong", {}),
        ("/webhooks/dockerhub", {"Authorization": "path-secret"}),
        ("/webhooks/github", {"X-Hub-Signature-256": "sha256=00"}),
    ],
)
async def test_unauthenticated_is_401_without_detail_and_sends_nothing(
    setup: Setup, path: str, headers: dict[str, str]
) -> None:
    status, body, _ = await post(setup, path, fixture("push-tag"), headers)
    assert (status, body) == (401, {"title": "Unauthorized", "status": 401})
    assert setup.sink.sent == []


async def test_github_signature_over_the_raw_body(setup: Setup) -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    signature = "sha256=" + hmac.new(b"gh", body, hashlib.sha256).hexdigest()
    status, answer, _ = await post(
        setup, "/webhooks/github", body, {"X-Hub-Signature-256": signature}
    )
    assert status == 200 and answer["ignored"] == [{"entry": 0, "reason": "ping"}]


@pytest.mark.parametrize("path", ["/webhooks/harbor", "/webhooks/nope", "/webhooks/zot"])
async def test_an_unknown_receiver_is_401_like_a_wrong_secret(setup: Setup, path: str) -> None:
    # 401, not 404: a name no receiver has is answered as a wrong secret is (a name is
    # half of the credential), so probing does not tell which names exist
    status, body, _ = await post(setup, path, b"{}", {"Authorization": TOKEN})
    assert (status, body) == (401, {"title": "Unauthorized", "status": 401})
    assert setup.sink.sent == []


async def test_over_the_size_limit_is_413(setup: Setup) -> None:
    status, body, _ = await post(
        setup, "/webhooks/distribution", b" " * 9000, {"Authorization": TOKEN}
    )
    assert status == 413
    assert body["errors"][0]["location"] == "body"
    # not the catalogue's too-large (a 400 record outcome): one type URI, one meaning
    assert (body["type"], body["status"]) == (
        "https://ocitag-worker.dev/problems/request-too-large",
        413,
    )


async def test_over_the_limit_without_content_length_is_413(setup: Setup) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    response = await setup.client.post(
        "/webhooks/distribution", data=chunks(), headers={"Authorization": TOKEN}
    )
    assert response.status == 413


async def test_unmappable_is_400_problem_naming_the_field(setup: Setup) -> None:
    event = {"action": "push", "target": {"url": "/v2/a/manifests/x", "tag": "v1"}}
    status, body, headers = await post(
        setup,
        "/webhooks/distribution",
        json.dumps({"events": [event]}).encode(),
        {"Authorization": TOKEN},
    )
    assert status == 400
    assert headers["Content-Type"].startswith("application/problem+json")
    assert set(body) == {"type", "title", "status", "detail", "instance", "errors"}
    assert body["type"] == "https://ocitag-worker.dev/problems/unmappable-delivery"
    assert body["errors"][0]["location"] == "body.events[0].request.host"
    assert setup.sink.sent == []


async def test_kafka_away_is_503_with_retry_after(setup: Setup) -> None:
    setup.sink.error = TransientError(Cause.KAFKA_UNAVAILABLE, "not connected")
    status, body, headers = await post(
        setup, "/webhooks/distribution", fixture("push-tag"), {"Authorization": TOKEN}
    )
    assert (status, headers["Retry-After"]) == (503, "7")
    assert body["status"] == 503


async def test_kafka_slower_than_the_deadline_is_503(setup: Setup) -> None:
    setup.sink.hang = True
    status, _, headers = await post(
        setup, "/webhooks/distribution", fixture("push-tag"), {"Authorization": TOKEN}
    )
    assert status == 503 and headers["Retry-After"] == "7"


async def test_a_retry_joins_the_send_still_in_flight(setup: Setup) -> None:
    setup.sink.hang = True
    for _ in range(3):
        status, _, _ = await post(
            setup, "/webhooks/distribution", fixture("push-tag"), {"Authorization": TOKEN}
        )
        assert status == 503
    assert setup.sink.calls == 1


async def test_nothing_to_publish_is_answered_while_kafka_is_away(setup: Setup) -> None:
    setup.sink.error = TransientError(Cause.KAFKA_UNAVAILABLE, "not connected")
    status, body, _ = await post(
        setup, "/webhooks/distribution", fixture("pull"), {"Authorization": TOKEN}
    )
    assert status == 200 and body == {"published": [], "ignored": [{"entry": 0, "reason": "pull"}]}


async def test_missing_digest_is_resolved(setup: Setup) -> None:
    status, body, _ = await post(setup, "/webhooks/dockerhub/path-secret", b"{}")
    assert status == 200
    assert json.loads(setup.sink.sent[0][2] or b"")["data"]["artifact"] == ART
    assert body["ignored"] == [{"entry": 1, "reason": "other_action", "detail": "x"}]


async def test_unresolvable_digest_is_502(setup: Setup) -> None:
    server_resolver = FakeResolver({})
    kinds = {"dockerhub": Enabled(KindSpec("dockerhub", Auth.PATH, _no_digest), (b"p",))}
    server = IngestServer(kinds, setup.sink, server_resolver, _limits())
    async with TestClient(TestServer(server.app())) as client:
        response = await client.post("/webhooks/dockerhub/p", data=b"{}")
        body = await response.json(content_type=None)
    assert response.status == 502
    assert "docker.io/org/app:v1" in body["detail"]
    assert setup.sink.sent == []


async def test_handshake_is_answered_as_given(setup: Setup) -> None:
    status, body, _ = await post(setup, "/webhooks/acr", b"[]", {"Authorization": TOKEN})
    assert (status, body) == (200, {"validationResponse": "abc"})
    assert setup.sink.sent == []


async def test_mappers_see_the_registry_query_and_the_arrival_time() -> None:
    seen: list[Mapping[str, str]] = []

    def mapper(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
        seen.append(headers)
        return []

    kinds = {"zot": Enabled(KindSpec("zot", Auth.HEADER, mapper), (TOKEN.encode(),))}
    server = IngestServer(kinds, FakeSink(), FakeResolver({}), _limits())
    async with TestClient(TestServer(server.app())) as client:
        response = await client.post(
            "/webhooks/zot?registry=zot.example.com:5000",
            data=b"{}",
            headers={"Authorization": TOKEN, "X-Ocitag-Received-At": "1999-01-01T00:00:00Z"},
        )
    assert response.status == 200
    assert seen[0]["x-ocitag-registry"] == "zot.example.com:5000"
    assert seen[0]["x-ocitag-received-at"] != "1999-01-01T00:00:00Z"
    assert seen[0]["x-ocitag-received-at"].endswith("Z")


async def test_a_body_slower_than_the_read_timeout_is_408() -> None:
    sink = FakeSink()
    kinds = {"distribution": Enabled(KINDS["distribution"], (TOKEN.encode(),))}
    server = IngestServer(kinds, sink, FakeResolver({}), _limits(read_timeout=0.2))

    async def slow() -> AsyncIterator[bytes]:
        yield b'{"events": ['
        await asyncio.sleep(1.0)
        yield b"]}"

    async with TestClient(TestServer(server.app())) as client:
        response = await client.post(
            "/webhooks/distribution", data=slow(), headers={"Authorization": TOKEN}
        )
    assert response.status == 408
    assert sink.sent == []


async def test_a_retried_quay_delivery_keeps_its_first_arrival_time() -> None:
    """Quay sends no id and no time: the retry of a delivery yields the same records
    (the worker replays them) as long as this process remembers its first arrival."""
    now = [datetime(2026, 12, 2, 4, 0, tzinfo=UTC)]
    sink = FakeSink()
    kinds = {"quay": Enabled(KINDS["quay"], (b"quay-path-secret",))}
    resolver = FakeResolver({"quay.io/mynamespace/repository:latest": f"sha256:{ART}"})
    server = IngestServer(kinds, sink, resolver, _limits(), clock=lambda: now[0])
    body, _ = load_delivery("quay", "repo_push")
    async with TestClient(TestServer(server.app())) as client:

        async def deliver(after: timedelta) -> None:
            now[0] += after
            response = await client.post("/webhooks/quay/quay-path-secret", data=body)
            assert response.status == 200

        await deliver(timedelta(0))
        await deliver(timedelta(minutes=7))  # the sender's retry
        await deliver(timedelta(minutes=60))  # 67 minutes after the first: forgotten
    first, retry, late = sink.sent
    assert retry == first  # byte for byte: key, value, headers
    assert json.loads(first[2] or b"")["time"] == "2026-12-02T04:00:00Z"
    assert json.loads(late[2] or b"")["time"] == "2026-12-02T05:07:00Z"
    assert json.loads(late[2] or b"")["id"] == json.loads(first[2] or b"")["id"]


async def test_the_cloudevents_validation_handshake_allows_the_origin(setup: Setup) -> None:
    origin = "eventgrid.azure.net"
    response = await setup.client.options(
        "/webhooks/acr", headers={"WebHook-Request-Origin": origin}
    )
    assert response.status == 200
    assert response.headers["WebHook-Allowed-Origin"] == origin
    assert response.headers["WebHook-Allowed-Rate"] == "*"
    assert setup.sink.sent == []


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/webhooks/harbor", {"WebHook-Request-Origin": "x.example"}, 404),  # not enabled
        ("/webhooks/distribution", {"WebHook-Request-Origin": "x.example"}, 404),  # no CE
        ("/webhooks/acr", {}, 400),  # no origin to allow
    ],
)
async def test_the_validation_handshake_is_only_for_enabled_cloudevents_kinds(
    setup: Setup, path: str, headers: dict[str, str], status: int
) -> None:
    response = await setup.client.options(path, headers=headers)
    assert response.status == status
    assert "WebHook-Allowed-Origin" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/webhooks/distribution", 405), ("POST", "/elsewhere", 404), ("GET", "/", 404)],
)
async def test_what_the_router_refuses_is_problem_json(
    setup: Setup, method: str, path: str, status: int
) -> None:
    response = await setup.client.request(method, path)
    assert response.status == status
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert json.loads(await response.read())["status"] == status
    if status == 405:
        assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        # ingest's lower-cased copy of the headers kept the last: authenticated
        ("/webhooks/distribution", [("Authorization", "Bearer wrong"), ("Authorization", TOKEN)]),
        ("/webhooks/distribution", [("Authorization", TOKEN), ("Authorization", TOKEN)]),
        ("/webhooks/github", [("X-Hub-Signature-256", "sha256=00")] * 2),
        ("/webhooks/nope", [("Authorization", TOKEN)] * 2),  # every name alike
    ],
)
async def test_a_repeated_proof_header_is_400_naming_it_and_sends_nothing(
    setup: Setup, path: str, fields: list[tuple[str, str]]
) -> None:
    response = await setup.client.post(path, data=fixture("push-tag"), headers=CIMultiDict(fields))
    raw = await response.text()
    body = json.loads(raw)
    name = fields[0][0].lower()
    assert response.status == 400
    assert body["type"] == "https://ocitag-worker.dev/problems/malformed-request"
    assert [(e["location"], e["value"]) for e in body["errors"]] == [(f"header.{name}", None)]
    assert "RFC 9110" in body["errors"][0]["message"]
    assert "s3cret" not in raw
    assert setup.sink.sent == []


async def test_a_proof_with_a_comma_is_compared_whole_not_refused_as_repeated() -> None:
    """A named receiver's secret may hold a comma (OCITAG_INGEST_RECEIVERS takes it as
    given): one value with a comma authenticates when it is a secret, and is 401, like any
    wrong proof, when it is not — a comma-joined pair proves nothing."""
    secret = "Bearer s3cret,with-a-comma"
    kinds = {"distribution": Enabled(KINDS["distribution"], (secret.encode(),))}
    server = IngestServer(kinds, FakeSink(), FakeResolver({}), _limits())
    client = TestClient(TestServer(server.app()))
    await client.start_server()
    try:
        statuses = []
        for proof in (secret, f"{secret}, Bearer wrong", "Bearer wrong, " + secret):
            response = await client.post(
                "/webhooks/distribution", data=fixture("push-tag"), headers={"Authorization": proof}
            )
            statuses.append(response.status)
    finally:
        await client.close()
    assert statuses == [200, 401, 401]
