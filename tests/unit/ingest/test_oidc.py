"""gar's Pub/Sub OIDC tokens: RS256 tokens signed here with a key of our own (as
Google's would be), the policy's decisions, the key cache, and the route without a path
secret."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import httpx
import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from worker.ingest.gate import Enabled
from worker.ingest.kinds import KINDS
from worker.ingest.mapping import Ignored, Mapped
from worker.ingest.oidc import HttpKeySource, OidcPolicy, OidcVerifier, verify
from worker.ingest.server import IngestServer, Limits

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
AUDIENCE = "https://ingest.example.com/webhooks/gar"
EMAIL = "pubsub-push@project.iam.gserviceaccount.com"


def jwks(*pairs: tuple[rsa.RSAPrivateKey, str]) -> dict[str, Any]:
    keys = []
    for key, kid in pairs:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
    return {"keys": keys}


KEYS = jwt.PyJWKSet.from_dict(jwks((KEY, "k1")))


def token(key: rsa.RSAPrivateKey = KEY, kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 3600,
        "email": EMAIL,
        "email_verified": True,
        **claims,
    }
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, "RS256", {"kid": kid})


POLICY = OidcPolicy(AUDIENCE, EMAIL)


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        (token(), True),
        (token(iss="accounts.google.com"), True),
        (token(aud="https://elsewhere.example.com"), False),
        (token(iss="https://evil.example.com"), False),
        (token(exp=int(time.time()) - 10), False),
        (token(exp=None), False),
        (token(email="someone@else.iam.gserviceaccount.com"), False),
        (token(email_verified=False), False),
        (token(key=OTHER), False),  # same kid, wrong signature
        (token(kid="k2"), None),  # unknown key: fetch the keys again
        ("not.a.jwt", False),
    ],
)
def test_policy(made: str, expected: bool | None) -> None:
    assert verify(made, KEYS, POLICY) is expected


def test_no_email_required_when_none_is_configured() -> None:
    assert verify(token(email=None, email_verified=None), KEYS, OidcPolicy(AUDIENCE)) is True


class Keys:
    def __init__(self, *sets: jwt.PyJWKSet) -> None:
        self.sets = list(sets)
        self.refreshes = 0

    async def key_set(self, *, refresh: bool = False) -> jwt.PyJWKSet:
        if refresh:
            self.refreshes += 1
            self.sets.pop(0)
        return self.sets[0]


async def test_a_rotated_key_is_fetched_once() -> None:
    rotated = jwt.PyJWKSet.from_dict(jwks((KEY, "k1"), (OTHER, "k2")))
    keys = Keys(KEYS, rotated)
    verifier = OidcVerifier(POLICY, keys)
    assert await verifier.authentic(f"Bearer {token(key=OTHER, kid='k2')}")
    assert keys.refreshes == 1
    assert not await verifier.authentic(token())  # no "Bearer "
    assert not await verifier.authentic(None)


async def test_http_key_source_caches_and_refreshes_at_most_so_often() -> None:
    calls = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, json=jwks((KEY, "k1")))

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        source = HttpKeySource("https://keys.example/certs", client, min_refresh_interval=60)
        await source.key_set()
        await source.key_set()
        await source.key_set(refresh=True)  # too soon after the fetch: cached
        assert calls == 1
        source = HttpKeySource("https://keys.example/certs", client, min_refresh_interval=0)
        await source.key_set()
        await source.key_set(refresh=True)
        assert calls == 3


def _ignored(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    return [Ignored("ping")]


async def test_gar_route_takes_the_token_or_the_path_secret() -> None:
    from worker.ingest.kinds import KindSpec

    spec = KindSpec("gar", KINDS["gar"].auth, _ignored)
    enabled = Enabled(spec, (b"path-secret",), oidc=OidcVerifier(POLICY, Keys(KEYS)))
    limits = Limits("t", 8192, 5.0, 1.0, 5, "https://ocitag-worker.dev/problems/")

    class Sink:
        async def send_all(self, messages: object) -> None:
            raise AssertionError("nothing to send")

    class Resolver:
        async def resolve_digest(self, repository: str, tag: str) -> str | None:
            return None

    server = IngestServer({"gar": enabled}, Sink(), Resolver(), limits)
    async with TestClient(TestServer(server.app())) as client:
        good = {"Authorization": f"Bearer {token()}"}
        bad = {"Authorization": f"Bearer {token(aud='https://other')}"}
        assert (await client.post("/webhooks/gar", data=b"{}", headers=good)).status == 200
        assert (await client.post("/webhooks/gar", data=b"{}", headers=bad)).status == 401
        assert (await client.post("/webhooks/gar/path-secret", data=b"{}")).status == 200
        assert (await client.post("/webhooks/gar/wrong", data=b"{}", headers=good)).status == 401
