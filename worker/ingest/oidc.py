"""Pub/Sub push authentication for ``gar``: the OIDC token Google signs and sends as
``Authorization: Bearer <JWT>`` when the push subscription has authentication on.

Accepted (besides the path secret) when ``OCITAG_INGEST_GAR_OIDC_AUDIENCE`` is set: an
RS256 token signed by one of Google's keys (``OCITAG_INGEST_GAR_OIDC_JWKS_URL``, fetched
and cached, fetched again for a key id it does not know), issued by Google, for that
audience, not expired, and, when ``OCITAG_INGEST_GAR_OIDC_EMAIL`` is set, for that
service account with a verified email. PyJWT does the cryptography and the claim checks;
what is written here is only the key cache and the policy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx
import jwt
import structlog

log = structlog.get_logger("worker.ingest")

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v3/certs"
_ALGORITHMS = ["RS256"]


@dataclass(frozen=True, slots=True)
class OidcPolicy:
    audience: str
    email: str | None = None
    issuers: Sequence[str] = GOOGLE_ISSUERS


class KeySource(Protocol):
    async def key_set(self, *, refresh: bool = False) -> jwt.PyJWKSet:
        """The signing keys; ``refresh`` asks for a fresh copy (an unknown key id)."""
        ...


def verify(token: str, keys: jwt.PyJWKSet, policy: OidcPolicy) -> bool | None:
    """True for a token the policy accepts, False for one it refuses, None when its key
    id is not among ``keys`` (fetch them again, then decide). Pure."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        return False
    key = next((k for k in keys.keys if k.key_id == kid), None)
    if key is None:
        return None
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=_ALGORITHMS,
            audience=policy.audience,
            issuer=list(policy.issuers),
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except jwt.PyJWTError:
        return False
    if policy.email is not None:
        return claims.get("email") == policy.email and claims.get("email_verified") is True
    return True


class OidcVerifier:
    """Checks an ``Authorization`` header against the policy, keys from ``source``."""

    def __init__(self, policy: OidcPolicy, source: KeySource) -> None:
        self._policy = policy
        self._source = source

    async def authentic(self, authorization: str | None) -> bool:
        if authorization is None or not authorization.startswith("Bearer "):
            return False
        token = authorization.removeprefix("Bearer ").strip()
        try:
            decided = verify(token, await self._source.key_set(), self._policy)
            if decided is None:
                decided = verify(token, await self._source.key_set(refresh=True), self._policy)
        except (httpx.HTTPError, jwt.PyJWTError) as exc:
            log.warning("oidc_keys_unavailable", error=str(exc))
            return False
        return bool(decided)


class HttpKeySource:
    """Google's JWKS over HTTPS, cached for an hour; fetched again on demand at most
    once a minute (an unknown key id must not turn every request into a fetch)."""

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        *,
        max_age: float = 3600.0,
        min_refresh_interval: float = 60.0,
    ) -> None:
        self._url = url
        self._client = client
        self._max_age = max_age
        self._min_interval = min_refresh_interval
        self._keys: jwt.PyJWKSet | None = None
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    async def key_set(self, *, refresh: bool = False) -> jwt.PyJWKSet:
        async with self._lock:
            age = time.monotonic() - self._fetched
            stale = self._keys is None or age > self._max_age
            if stale or (refresh and age > self._min_interval):
                response = await self._client.get(self._url, timeout=5.0)
                response.raise_for_status()
                self._keys = jwt.PyJWKSet.from_dict(response.json())
                self._fetched = time.monotonic()
            assert self._keys is not None
            return self._keys
