"""zot registry events: CloudEvents over HTTP (binary or structured mode), from zot's
``events`` extension (``pkg/extensions/events``).

Types: ``zotregistry.image.updated`` (a manifest stored under ``data.reference``: a tag,
or its digest when pushed by digest), ``zotregistry.image.deleted`` (the same for a
deletion), ``zotregistry.image.lint_failed`` and ``zotregistry.repository.created``.
``data``: ``name`` (the repository, without host), ``reference``, ``digest``,
``mediaType`` (and ``manifest``). The event ``id`` (a UUID) and ``time`` identify it.

zot's ``source`` is the constant ``zotregistry.dev``, so the registry host comes from the
delivery URL: ``POST /webhooks/zot?registry=<host>`` (or an ``X-Ocitag-Registry``
header); a ``source`` that is a URL with a host is used when neither is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from worker.ingest.cehttp import Received, read_events
from worker.ingest.mapping import (
    REGISTRY_HEADER,
    Ignored,
    Mapped,
    MappingError,
    TagChange,
    ingest_source,
)
from worker.ingest.payload import as_object, optional_str, required_str

KIND = "zot"
UPDATED = "zotregistry.image.updated"
DELETED = "zotregistry.image.deleted"
_IGNORED = {
    "zotregistry.image.lint_failed": "lint",
    "zotregistry.repository.created": "repository_created",
}


def map_delivery(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    override = headers.get(REGISTRY_HEADER) or None
    return [_map(event, override) for event in read_events(body, headers)]


def _map(event: Received, override: str | None) -> Mapped:
    kind = event.required("type")
    if kind in _IGNORED:
        return Ignored(_IGNORED[kind])
    if kind not in (UPDATED, DELETED):
        return Ignored("other_type", kind)
    where = "body" if event.location.startswith("headers") else event.where("data")
    data = as_object(event.data, where)
    reference = required_str(data, "reference", where)
    if ":" in reference:  # a digest: tags cannot hold ':'
        return Ignored("untagged" if kind == UPDATED else "digest_delete", reference)
    host = override or _source_host(event.required("source"))
    if host is None:
        raise MappingError(
            "query.registry",
            "zot does not name its registry host (its source is always zotregistry.dev): "
            "add ?registry=<host> to the sink address",
        )
    return TagChange(
        action="moved" if kind == UPDATED else "deleted",
        repository=f"{host}/{required_str(data, 'name', where)}",
        tag=reference,
        digest=required_str(data, "digest", where) if kind == UPDATED else None,
        event_id=event.required("id"),
        time=event.time(),
        source=ingest_source(KIND, host),
        actor=optional_str(data, "actor", where),
    )


def _source_host(source: str) -> str | None:
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https"):
        return None
    return parts.netloc.rpartition("@")[2] or None
