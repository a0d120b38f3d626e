"""Digests for tag events whose payload has none (Docker Hub, Quay): looked up in the
registry with ``HEAD /v2/<name>/manifests/<tag>``. The look-up is behind a Protocol so
the decision code is tested without a registry; ``worker.oci.RegistryClient`` is the
real one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from worker.identifiers import InvalidIdentifierError, normalize_digest
from worker.ingest.mapping import TagChange


class DigestResolver(Protocol):
    async def resolve_digest(self, repository: str, tag: str) -> str | None:
        """The digest ``repository:tag`` points at now; None when the tag is not there."""
        ...


class NoResolver:
    """No registry client in this deployment: every look-up fails (502)."""

    async def resolve_digest(self, repository: str, tag: str) -> str | None:
        return None


class UnresolvedDigestError(Exception):
    """A move's digest could not be found: the delivery is answered 502."""

    def __init__(self, ocitag_id: str, reason: str) -> None:
        super().__init__(f"{ocitag_id}: {reason}")
        self.ocitag_id = ocitag_id
        self.reason = reason


async def resolve_all(events: Sequence[TagChange], resolver: DigestResolver) -> list[TagChange]:
    """The events with every missing move digest filled in (looked up concurrently)."""
    missing = [e for e in events if e.action == "moved" and e.digest is None]
    if not missing:
        return list(events)
    found = await asyncio.gather(
        *(resolver.resolve_digest(e.repository, e.tag) for e in missing), return_exceptions=True
    )
    resolved: dict[int, TagChange] = {}
    for event, digest in zip(missing, found, strict=True):
        ocitag_id = f"{event.repository}:{event.tag}"
        if isinstance(digest, BaseException):
            raise UnresolvedDigestError(ocitag_id, f"{type(digest).__name__}: {digest}")
        if digest is None:
            raise UnresolvedDigestError(ocitag_id, "the registry does not have this tag")
        try:
            resolved[id(event)] = replace(event, digest=normalize_digest(digest))
        except InvalidIdentifierError as exc:
            raise UnresolvedDigestError(
                ocitag_id, f"the registry answered {digest!r}: {exc}"
            ) from None
    return [resolved.get(id(e), e) for e in events]
