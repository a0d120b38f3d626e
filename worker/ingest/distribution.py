"""CNCF Distribution registry notifications (also GitLab's registry, which sends the same).

Envelope ``{"events": [...]}`` (media types ``application/vnd.docker.distribution.
events.v1+json`` and ``…v2+json``: v2 only adds descriptor members). What registry
v3.1.2 sends, read from its ``notifications/bridge.go``:

- ``push`` of a manifest: ``target.mediaType``, ``target.digest``, ``target.url``
  (``…/manifests/sha256:…``) and ``target.tag`` when pushed by tag (no tag when pushed
  by digest, e.g. the platform manifests of an index);
- ``push`` / ``mount`` / ``pull`` of a blob: ``target.url`` is ``…/blobs/…``;
- ``delete`` of a tag (``DELETE /v2/<name>/manifests/<tag>``): ``target.tag`` only;
- ``delete`` of a manifest by digest: ``target.digest`` only, then one tag delete for
  every tag that pointed at it (the registry untags them); ``delete`` of a repository:
  ``target.repository`` only.

Every event has ``id`` (a UUID), ``timestamp``, ``request.host`` (the host the client
used: the registry host of the repository) and ``actor.name`` (the authenticated user,
empty without auth). A registry retrying a delivery sends the same events again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.ingest.mapping import (
    REGISTRY_HEADER,
    Ignored,
    Mapped,
    MappingError,
    TagChange,
    ingest_source,
)
from worker.ingest.payload import (
    as_list,
    as_object,
    optional_str,
    parse_json,
    required_str,
    required_time,
)

KIND = "distribution"

MANIFEST_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.artifact.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)


def map_delivery(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    envelope = as_object(parse_json(body), "body")
    if "events" not in envelope:
        raise MappingError("body.events", "is required: distribution's envelope {'events': [...]}")
    entries = as_list(envelope["events"], "body.events")
    override = headers.get(REGISTRY_HEADER) or None
    return [
        map_event(entry, f"body.events[{index}]", override) for index, entry in enumerate(entries)
    ]


def map_event(raw: Any, location: str, host_override: str | None = None) -> Mapped:
    """One notification event. Fields are read only where the decision needs them."""
    event = as_object(raw, location)
    action = optional_str(event, "action", location)
    if action not in ("push", "delete"):  # read nothing else of what is ignored anyway
        return _OTHER.get(action or "", Ignored("other_action", action or ""))
    target = _member(event, "target", location)
    where = f"{location}.target"
    tag = optional_str(target, "tag", where)
    if action == "push":
        if not _is_manifest(target, where):
            return Ignored("blob")
        if tag is None:
            return Ignored("untagged", optional_str(target, "digest", where) or "")
    elif tag is None:
        return _untagged_delete(target, where)
    return _tag_event(
        "moved" if action == "push" else "deleted",
        event,
        target,
        location=location,
        tag=tag,
        host_override=host_override,
    )


_OTHER = {"pull": Ignored("pull"), "mount": Ignored("blob", "mount")}


def _untagged_delete(target: Mapping[str, Any], where: str) -> Ignored:
    """A manifest (or blob) deleted by digest, or a whole repository: the tags that
    pointed there come as tag deletes of their own."""
    digest = optional_str(target, "digest", where)
    if digest is not None:
        return Ignored("digest_delete", digest)
    return Ignored("repository_delete", optional_str(target, "repository", where) or "")


def _is_manifest(target: Mapping[str, Any], where: str) -> bool:
    url = optional_str(target, "url", where) or ""
    if "/manifests/" in url:
        return True
    if "/blobs/" in url:
        return False
    media_type = (optional_str(target, "mediaType", where) or "").split(";")[0].strip()
    return media_type in MANIFEST_MEDIA_TYPES


def _tag_event(
    action: str,
    event: Mapping[str, Any],
    target: Mapping[str, Any],
    *,
    location: str,
    tag: str,
    host_override: str | None,
) -> TagChange:
    request = _member(event, "request", location)
    actor = _member(event, "actor", location)
    host = host_override or required_str(request, "host", f"{location}.request")
    repository = required_str(target, "repository", f"{location}.target")
    digest = required_str(target, "digest", f"{location}.target") if action == "moved" else None
    return TagChange(
        action="moved" if action == "moved" else "deleted",
        repository=f"{host}/{repository}",
        tag=tag,
        digest=digest,
        event_id=required_str(event, "id", location),
        time=required_time(event, "timestamp", location),
        source=ingest_source(KIND, host),
        actor=optional_str(actor, "name", f"{location}.actor"),
    )


def _member(event: Mapping[str, Any], name: str, location: str) -> Mapping[str, Any]:
    """An object member; absent or null reads as empty (Go's zero value)."""
    value = event.get(name)
    return {} if value is None else as_object(value, f"{location}.{name}")
