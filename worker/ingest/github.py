"""GitHub ``package`` and ``registry_package`` webhooks of container packages (ghcr.io).

From GitHub's webhook schema and octokit/webhooks' payload examples: the event name is
the ``X-GitHub-Event`` header, the body ``{"action": "published" | "updated",
"<event>": {"package_type": "CONTAINER", "package_version": {"container_metadata":
{"tag": {"name", "digest"}, "manifest": {…}}, "package_url":
"ghcr.io/<owner>/<name>:<tag>", "created_at", "updated_at"}, "updated_at", …},
"sender": {"login"}}``. GitHub sends no deletions of package versions (its actions are
``published`` and ``updated`` only): tags removed on ghcr.io are repaired by reconcile.

- A multi-arch push arrives as one delivery per manifest: each platform manifest with an
  empty tag name (ignored as ``untagged``), then the index with the tag and the index
  digest, which is the one tag move.
- Identity: the id is ``X-GitHub-Delivery``, a GUID per event that a redelivery keeps.
  The time is the version's ``updated_at`` (else ``created_at``); GitHub sends Go's zero
  time ``0001-01-01T00:00:00Z`` there for container versions, which counts as absent,
  and then the package's ``updated_at`` is used.
- ghcr.io names are lower case (clients refuse others) while the payload spells the
  owner as its login is displayed, so the repository path is lower-cased.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from worker.ingest.entries import member_object, tag_event, url_host
from worker.ingest.mapping import Ignored, Mapped, MappingError
from worker.ingest.payload import as_object, optional_str, parse_json, required_str
from worker.timefmt import parse_rfc3339

KIND = "github"
DEFAULT_HOST = "ghcr.io"
EVENT_HEADER = "x-github-event"
DELIVERY_HEADER = "x-github-delivery"
EVENTS = ("package", "registry_package")
CONTAINER_TYPES = frozenset({"container", "docker"})
ACTIONS = frozenset({"published", "updated"})


def map_delivery(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    payload = as_object(parse_json(body), "body")
    name = headers.get(EVENT_HEADER) or next((e for e in EVENTS if e in payload), "")
    if name == "ping" or (not name and "zen" in payload):
        return [Ignored("ping")]
    if name not in EVENTS:
        return [Ignored("other_event", name)]
    if name not in payload:
        raise MappingError(f"body.{name}", f"is required in a '{name}' event")
    package = as_object(payload[name], f"body.{name}")
    where = f"body.{name}"
    kind_of = optional_str(package, "package_type", where) or ""
    if kind_of.lower() not in CONTAINER_TYPES:
        return [Ignored("not_container", kind_of)]
    action = optional_str(payload, "action", "body") or ""
    if action not in ACTIONS:
        return [Ignored("other_action", action)]
    version = member_object(package, "package_version", where)
    v_where = f"{where}.package_version"
    metadata = member_object(version, "container_metadata", v_where)
    tag_ref = member_object(metadata, "tag", f"{v_where}.container_metadata")
    t_where = f"{v_where}.container_metadata.tag"
    tag = optional_str(tag_ref, "name", t_where)
    if tag is None:
        return [Ignored("untagged", optional_str(tag_ref, "digest", t_where) or "")]
    sender = member_object(payload, "sender", "body")
    return [
        tag_event(
            "moved",
            kind=KIND,
            repository=_repository(package, version, where),
            tag=tag,
            digest=required_str(tag_ref, "digest", t_where),
            event_id=_delivery_id(headers),
            time=_time(package, version, where),
            actor=optional_str(sender, "login", "body.sender"),
            at={
                "repository": f"{v_where}.package_url",
                "tag": f"{t_where}.name",
                "digest": f"{t_where}.digest",
            },
        )
    ]


def _repository(package: Mapping[str, Any], version: Mapping[str, Any], where: str) -> str:
    """``host/owner/name`` from ``package_url`` (``ghcr.io/<owner>/<name>:<tag>``), else
    from the owner's login and the package name on ghcr.io."""
    url = optional_str(version, "package_url", f"{where}.package_version")
    if url is not None:
        host = url_host(url, f"{where}.package_version.package_url")
        reference = url.split("://", 1)[-1]
        slash = reference.find("/")
        path = reference[slash + 1 :] if slash >= 0 else ""
        if ":" in path.rsplit("/", 1)[-1]:
            path = path[: path.rfind(":")]
        return f"{host}/{path.lower()}"
    owner = member_object(package, "owner", where)
    login = required_str(owner, "login", f"{where}.owner")
    name = required_str(package, "name", where)
    return f"{DEFAULT_HOST}/{login.lower()}/{name.lower()}"


def _delivery_id(headers: Mapping[str, str]) -> str:
    delivery = headers.get(DELIVERY_HEADER)
    if not delivery:
        raise MappingError(f"headers.{DELIVERY_HEADER}", "is required: GitHub's GUID of the event")
    return delivery


def _time(package: Mapping[str, Any], version: Mapping[str, Any], where: str) -> datetime:
    for obj, key, location in (
        (version, "updated_at", f"{where}.package_version"),
        (version, "created_at", f"{where}.package_version"),
        (package, "updated_at", where),
    ):
        text = optional_str(obj, key, location)
        if text is None:
            continue
        try:
            moment = parse_rfc3339(text)
        except ValueError as exc:
            raise MappingError(f"{location}.{key}", str(exc), text) from None
        if moment.year > 1:  # Go's zero time stands for "not set"
            return moment
    raise MappingError(f"{where}.updated_at", "is required: no timestamp in the event")
