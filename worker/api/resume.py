"""Watch event ids: where in the state topic a watcher stood after an event. Pure (no
I/O; sealing is computation).

Inside an id is the next offset to read of every partition of the state topic (``w1.``
+ base64url of the offsets, comma-separated), so any api process (a restarted one,
another replica) resumes a ``Last-Event-ID`` from the topic itself, not from its own
memory. Events of a snapshot carry ``s1.`` ids: a snapshot cut short cannot be continued
(the client holds part of it; the rest has moved on), so resuming one starts over with
``reset`` and a fresh snapshot.

Clients see that plain id sealed (``EventIds``: ``e1.`` + AES-GCM, the key derived from
the api's bearer tokens like the list cursors', worker/api/cursors.py). The offsets count
every change of every repository: plain, two ids a watcher of one repository receives
tell it how many changes happened meanwhile where its grants do not reach, and a forged
id could probe the topic. The nonce is derived from the plain id (HMAC), so one position
always gives one id: the feed seals each record's id once for every watcher, and equal
ids mean equal positions (which is all they reveal).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from worker.api.cursors import CursorSeal

LIVE_PREFIX = "w1."
SNAPSHOT_PREFIX = "s1."
SEALED_PREFIX = "e1."
_SEAL_INFO = b"ocitag-api watch event id v1"
_NONCE_INFO = b"ocitag-api watch event id nonce v1"
#: a longer Last-Event-ID is not one of ours (10,000 partitions of 19 digits fit, sealed:
#: about 356,000 characters)
MAX_ID_CHARS = 400_000
_MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Resume:
    """A decoded id: per partition (index) the next offset to read."""

    positions: tuple[int, ...]
    snapshot: bool


def encode(positions: tuple[int, ...], *, snapshot: bool = False) -> str:
    text = ",".join(map(str, positions)).encode()
    body = base64.urlsafe_b64encode(text).rstrip(b"=").decode()
    return (SNAPSHOT_PREFIX if snapshot else LIVE_PREFIX) + body


def decode(text: str | None) -> Resume | None:
    """The id's positions, or None when it is not an id this api gave (then the watch
    starts over with ``reset``)."""
    if not text or len(text) > MAX_ID_CHARS:
        return None
    prefix, body = text[:3], text[3:]
    if prefix not in (LIVE_PREFIX, SNAPSHOT_PREFIX) or not body:
        return None
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        return None
    parts = raw.split(",")
    canonical = encode_body(raw) == body  # one spelling per id: no padding, no stray bits
    if not canonical or not all(_is_offset(p) for p in parts):
        return None
    return Resume(tuple(int(p) for p in parts), prefix == SNAPSHOT_PREFIX)


def _is_offset(text: str) -> bool:
    """A decimal offset as ``str(int)`` writes it, within Kafka's range."""
    plain = text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")
    return plain and len(text) <= 19 and int(text) <= _MAX_OFFSET


def encode_body(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


class EventIds:
    """The ids clients see: plain ids (above) sealed; ``decode`` gives None for anything
    this api's key did not seal (a forged, tampered or pre-sealing id: the watch then
    resets)."""

    def __init__(self, secret: bytes) -> None:
        self._seal = CursorSeal(secret, _SEAL_INFO)
        hkdf = HKDF(algorithm=SHA256(), length=32, salt=None, info=_NONCE_INFO)
        self._nonce_key = hkdf.derive(secret)

    @classmethod
    def from_tokens(cls, tokens: str | None) -> EventIds:
        """Keyed by the api's bearer tokens (every replica has them: any replica resumes
        another's id); random per process without tokens."""
        return cls(tokens.encode() if tokens else os.urandom(32))

    def encode(self, positions: tuple[int, ...], *, snapshot: bool = False) -> str:
        plain = encode(positions, snapshot=snapshot).encode()
        nonce = hmac.new(self._nonce_key, plain, hashlib.sha256).digest()[:12]
        return SEALED_PREFIX + self._seal.seal(plain, nonce)

    def decode(self, text: str | None) -> Resume | None:
        if not text or len(text) > MAX_ID_CHARS or not text.startswith(SEALED_PREFIX):
            return None
        plain = self._seal.open(text[len(SEALED_PREFIX) :])
        if plain is None:
            return None
        try:
            return decode(plain.decode("ascii"))
        except UnicodeDecodeError:
            return None
