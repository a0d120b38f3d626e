"""Who may deliver, and the body they deliver: the receiver a delivery names, its proof
(secret, signature or OIDC token), and the body read within the size limit and the read
timeout.

Header and path secrets are checked before the body is read, signatures right after; a
name no receiver has is checked against a decoy of the same scheme, so that it costs what
a wrong secret costs and is answered alike (401; ``unknown_receiver`` is only the log's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from worker.headers import sent_twice
from worker.ingest import refusals
from worker.ingest.auth import DECOYS, PROOF_HEADERS, Compare, authentic, decoy_scheme
from worker.ingest.kinds import KINDS, Auth, KindSpec
from worker.ingest.oidc import OidcVerifier
from worker.ingest.receivers import Hosts
from worker.ingest.refusals import RefusedError

_CHUNK = 65_536


@dataclass(frozen=True, slots=True)
class Enabled:
    """A served receiver: its kind's mapper and scheme, the secrets that are valid now,
    and the registry hosts it may speak for."""

    spec: KindSpec
    secrets: tuple[bytes, ...]
    #: also accepted on the route without a path secret: a verified OIDC token (gar)
    oidc: OidcVerifier | None = None
    hosts: Hosts = field(default_factory=Hosts.any)
    #: a stand-in for a name no receiver has: checked like one, never authentic
    decoy: bool = False


#: for each scheme, a kind that has it: what a delivery to an unknown name is checked as
_DECOY_KINDS = {spec.auth: spec for spec in reversed(KINDS.values())}


def decoy(request: web.Request) -> Enabled:
    """A receiver no one can authenticate to, of the scheme the delivery's shape asks
    for: an unknown name costs what a wrong secret costs, and is answered alike (401)."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    scheme: Auth = decoy_scheme(headers, request.match_info.get("secret"))
    return Enabled(_DECOY_KINDS[scheme], DECOYS, decoy=True)


class Gate:
    """Authenticates a delivery and reads its body (RefusedError: 400, 401, 408, 413)."""

    def __init__(
        self, max_body_bytes: int, read_timeout: float, problem_base_uri: str, compare: Compare
    ) -> None:
        self._limit = max_body_bytes
        self._read_timeout = read_timeout
        self._base = problem_base_uri
        self._compare = compare

    async def body(
        self, request: web.Request, enabled: Enabled, headers: Mapping[str, str]
    ) -> bytes:
        """The body of a delivery that proves itself (401 otherwise, alike for a wrong
        secret and a name no receiver has). A proof header sent twice is 400 for every
        name alike, before any check: read as one of them (the copy of the headers keeps
        the last), it proved itself by whichever came last. One value with a comma is
        compared whole, as any other (worker/headers.py ``sent_twice``)."""
        twice = [name for name in PROOF_HEADERS if sent_twice(request.headers.getall(name, []))]
        if twice:
            raise refusals.repeated_headers(self._base, twice)
        spec = enabled.spec
        path_secret = request.match_info.get("secret")
        refused = RefusedError(401, "unknown_receiver" if enabled.decoy else "unauthenticated")
        if not spec.auth.needs_body and not await self._authentic(enabled, headers, path_secret):
            raise refused
        body = await self._read(request)
        if spec.auth.needs_body and not authentic(
            spec.auth, enabled.secrets, headers, body, path_secret, compare=self._compare
        ):
            raise refused
        if enabled.decoy:  # unreachable (random 32-byte secrets); never served regardless
            raise refused
        return body

    async def _authentic(
        self, enabled: Enabled, headers: Mapping[str, str], path_secret: str | None
    ) -> bool:
        if path_secret is None and enabled.oidc is not None:
            return await enabled.oidc.authentic(headers.get("authorization"))
        return authentic(
            enabled.spec.auth, enabled.secrets, headers, b"", path_secret, compare=self._compare
        )

    async def _read(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self._limit:
            raise self._too_large(request.content_length)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._read_timeout):
                while chunk := await request.content.read(_CHUNK):
                    size += len(chunk)
                    if size > self._limit:
                        raise self._too_large(size)
                    chunks.append(chunk)
        except TimeoutError:
            raise RefusedError(408, "read_timeout") from None
        return b"".join(chunks)

    def _too_large(self, size: int) -> RefusedError:
        return refusals.too_large(self._base, self._limit, size)
