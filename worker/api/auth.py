"""Bearer tokens (``OCITAG_API_TOKENS``) and the caller each one names. Pure.

An entry is ``caller:token`` or a bare ``token``; several entries may name one caller
(rotation: old and new token both work, and the caller's events keep one ``source``, so an
``Idempotency-Key`` retried across a rotation is still the same event). A bare token's
caller is ``token-`` + the first 12 hex of its SHA-256: an identity, never the token.
Tokens are compared as SHA-256 digests with ``hmac.compare_digest`` against every entry,
so the time taken does not depend on which entry (or how much of one) matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from worker.errors import SettingsError

MIN_TOKEN_CHARS = 16
CALLER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a header can carry unchanged


@dataclass(frozen=True, slots=True)
class Tokens:
    """The accepted tokens, by SHA-256 digest, each with the caller it names."""

    entries: tuple[tuple[bytes, str], ...]

    def caller(self, authorization: str | None) -> str | None:
        """The caller of an ``Authorization: Bearer <token>`` header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        found: str | None = None
        for expected, caller in self.entries:
            if hmac.compare_digest(digest, expected) and found is None:
                found = caller
        return found


def parse_tokens(raw: str | None) -> Tokens:
    """``caller:token,caller:token2,bare-token`` → Tokens; SettingsError naming the
    setting (never the token) for a malformed entry."""
    entries: list[tuple[bytes, str]] = []
    for number, raw_entry in enumerate((raw or "").split(","), start=1):
        entry = raw_entry.strip()
        if not entry:
            continue
        caller, sep, token = entry.partition(":")
        if not sep:
            caller, token = "", entry
        elif not CALLER_RE.fullmatch(caller):
            raise SettingsError(
                f"invalid setting OCITAG_API_TOKENS: entry {number}: the caller name must "
                "match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"
            )
        if len(token) < MIN_TOKEN_CHARS or not _TOKEN_RE.fullmatch(token):
            raise SettingsError(
                f"invalid setting OCITAG_API_TOKENS: entry {number}: a token must be at least "
                f"{MIN_TOKEN_CHARS} visible ASCII characters"
            )
        digest = hashlib.sha256(token.encode()).digest()
        entries.append((digest, caller or f"token-{digest.hex()[:12]}"))
    return Tokens(tuple(entries))
