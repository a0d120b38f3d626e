"""Sealed list cursors.

A filtered list (grants) pages by the last row it *examined*, which may be a tag the
caller may not read; a plain cursor would name it, and a forged one would page through a
repository's names. Sealed (AES-GCM, authenticated encryption from ``cryptography``), a
cursor can be neither read nor forged. The key is derived (HKDF-SHA256) from the api's
bearer tokens, which every replica is given, so any replica opens a cursor another gave;
rotating the tokens makes open cursors 422 (the client starts the list again). Without
tokens (none configured: every request is 401 anyway) the key is random per process.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"ocitag-api list cursor v1"
_NONCE = 12


class CursorSeal:
    """``info`` keeps the seals of different uses apart (a list cursor is never a watch
    event id: each has its own key)."""

    def __init__(self, secret: bytes, info: bytes = _INFO) -> None:
        key = HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(secret)
        self._aead = AESGCM(key)
        self._info = info

    @classmethod
    def from_tokens(cls, tokens: str | None, info: bytes = _INFO) -> CursorSeal:
        return cls(tokens.encode() if tokens else os.urandom(32), info)

    def seal(self, plain: bytes, nonce: bytes | None = None) -> str:
        """Sealed with a random nonce, or the caller's (12 bytes; the same nonce must
        only ever seal the same plain text: see resume.EventIds)."""
        nonce = os.urandom(_NONCE) if nonce is None else nonce
        sealed = nonce + self._aead.encrypt(nonce, plain, self._info)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def open(self, cursor: str) -> bytes | None:
        """The plain cursor, or None for anything this seal did not make."""
        try:
            raw = base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode("ascii"))
            if len(raw) <= _NONCE:
                return None
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], self._info)
        except (ValueError, binascii.Error, UnicodeEncodeError, InvalidTag):
            return None
