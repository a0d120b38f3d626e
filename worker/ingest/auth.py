"""Authenticity of a delivery, before its body is parsed. Pure, constant-time.

Every configured secret is tried (rotation: several are valid at once) and each
comparison is ``hmac.compare_digest``, so the time taken says nothing about how much of
a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from worker.ingest.kinds import Auth

HUB_PREFIX = "sha256="


def authentic(
    auth: Auth,
    secrets: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    path_secret: str | None,
) -> bool:
    """Whether the delivery proves knowledge of one of ``secrets`` (header names
    lower-case; ``path_secret`` is the last path segment, when the route has one)."""
    if auth is Auth.PATH:
        return _equals_any(path_secret, secrets)
    if path_secret is not None:
        return False  # a secret in the URL where none belongs: refuse, do not ignore
    if auth is Auth.HEADER:
        return _equals_any(headers.get("authorization"), secrets)
    if auth is Auth.HUB_SIGNATURE:
        given = headers.get("x-hub-signature-256")
        if given is None or not given.startswith(HUB_PREFIX):
            return False  # SHA-1 (X-Hub-Signature) is refused
        return _signed_by_any(given.removeprefix(HUB_PREFIX), secrets, body)
    return _signed_by_any(headers.get("x-jfrog-event-auth"), secrets, body)


def _equals_any(given: str | None, secrets: Sequence[bytes]) -> bool:
    if given is None:
        return False
    raw = given.encode("utf-8", "surrogateescape")
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(raw, secret)
    return found


def _signed_by_any(given: str | None, secrets: Sequence[bytes], body: bytes) -> bool:
    if given is None:
        return False
    raw = given.strip().lower().encode("utf-8", "surrogateescape")
    found = False
    for secret in secrets:
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        found |= hmac.compare_digest(raw, expected)
    return found


def split_secrets(value: str) -> tuple[bytes, ...]:
    """A setting's comma-separated secrets, blanks dropped."""
    return tuple(part.strip().encode() for part in value.split(",") if part.strip())
