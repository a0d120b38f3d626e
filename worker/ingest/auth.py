"""Authenticity of a delivery, before its body is parsed. Pure, constant-time, and the
same cost whatever the outcome.

Every check makes exactly ``SLOTS`` comparisons, each of two SHA-256 digests (32 bytes):
the sender's proof against each of the receiver's secrets, padded to ``SLOTS`` with
random decoys (rotation keeps at most ``SLOTS`` secrets valid at once). A refusal for the
shape of the request (a path secret where the kind takes a header, no header at all)
still makes the ``SLOTS`` comparisons, and so does a delivery to a name no receiver has
(the server checks it against decoys alone). So the time taken says nothing about how
much of a guess was right, which secret matched, or whether the receiver exists. The
comparator is a parameter so that a unit test can count the comparisons and their
lengths (``hmac.compare_digest`` otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping, Sequence

from worker.ingest.kinds import Auth

HUB_PREFIX = "sha256="
#: the headers a proof is read from (lower-case): each is single-valued (worker/headers.py)
PROOF_HEADERS = ("authorization", "x-hub-signature-256", "x-jfrog-event-auth")
#: the most secrets one receiver holds at once; every check compares this many
SLOTS = 4
#: what a check compares: two 32-byte digests; True when equal (constant time)
Compare = Callable[[bytes, bytes], bool]
#: random stand-ins for the slots a receiver does not fill, and for a name no receiver has
DECOYS: tuple[bytes, ...] = tuple(os.urandom(32) for _ in range(SLOTS))


def authentic(
    auth: Auth,
    secrets: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    path_secret: str | None,
    *,
    compare: Compare = hmac.compare_digest,
) -> bool:
    """Whether the delivery proves knowledge of one of ``secrets`` (header names
    lower-case; ``path_secret`` is the last path segment, when the route has one)."""
    keys = padded(secrets)
    if auth is Auth.PATH:
        return _equals_any(path_secret, keys, compare)
    if auth is Auth.HEADER:
        found = _equals_any(headers.get("authorization"), keys, compare)
        return found and path_secret is None  # a secret in the URL where none belongs
    if auth is Auth.HUB_SIGNATURE:
        given = headers.get("x-hub-signature-256")
        signed = given is not None and given.startswith(HUB_PREFIX)  # SHA-1 is refused
        proof = given.removeprefix(HUB_PREFIX) if signed and given else None
    else:
        proof = headers.get("x-jfrog-event-auth")
        signed = proof is not None
    found = _signed_by_any(proof, keys, body, compare)
    return found and signed and path_secret is None


def padded(secrets: Sequence[bytes]) -> tuple[bytes, ...]:
    """The secrets and decoys for the slots they leave (never fewer than ``SLOTS``)."""
    return (*secrets, *DECOYS[len(secrets) :])


def _digest(value: str | bytes | None) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return hashlib.sha256(value or b"").digest()


def _equals_any(given: str | None, keys: Sequence[bytes], compare: Compare) -> bool:
    proof = _digest(given)
    found = False
    for key in keys:
        found |= compare(proof, _digest(key))
    return found and given is not None


def _signed_by_any(given: str | None, keys: Sequence[bytes], body: bytes, compare: Compare) -> bool:
    proof = _digest(given.strip().lower() if given is not None else None)
    found = False
    for key in keys:
        expected = hmac.new(key, body, hashlib.sha256).hexdigest()
        found |= compare(proof, _digest(expected))
    return found and given is not None


def split_secrets(value: str) -> tuple[bytes, ...]:
    """A setting's comma-separated secrets, blanks dropped."""
    return tuple(part.strip().encode() for part in value.split(",") if part.strip())


def decoy_scheme(headers: Mapping[str, str], path_secret: str | None) -> Auth:
    """The scheme a delivery to an unknown name is checked with: the one its own shape
    asks for, so it costs what the same delivery to a receiver of that scheme costs."""
    if path_secret is not None:
        return Auth.PATH
    if "x-hub-signature-256" in headers:
        return Auth.HUB_SIGNATURE
    if "x-jfrog-event-auth" in headers:
        return Auth.JFROG_SIGNATURE
    return Auth.HEADER
