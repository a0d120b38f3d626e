"""Harbor webhooks (HTTP endpoint policies), in both payload formats.

Read from Harbor's source (``src/pkg/notifier/model/event.go``,
``src/controller/event/handler/webhook/artifact/artifact.go``,
``src/pkg/notifier/formats/{default,cloudevents}.go``) and its "Configure Webhook
Notifications" page:

- **Default** format: ``{"type": "PUSH_ARTIFACT", "occur_at": <unix s>, "operator":
  "<user>", "event_data": {"resources": [{"digest", "tag", "resource_url"}],
  "repository": {"name", "namespace", "repo_full_name", "repo_type"}}}``. It has no
  event id: the id is derived from the body (Harbor formats the payload once and its job
  service retries that same body), the time is ``occur_at``.
- **CloudEvents** format (2.8+): a structured CloudEvent ``{"specversion": "1.0", "id",
  "source": "/projects/<p>/webhook/policies/<n>", "type": "harbor.artifact.pushed",
  "time", "operator", "data": <the Default event_data>}``; id and time are the event's
  (its id is minted once, when the payload is formatted, so a retry repeats it).
- ``resource_url`` is ``<external host>/<project>/<repo>:<tag>`` (``@<digest>`` when the
  artifact has no tag): the registry host comes from it.
- A push by digest (an untagged artifact, e.g. a platform manifest) carries the digest
  in ``tag`` as well: ignored as ``untagged``. A ``DELETE_ARTIFACT`` deletes the artifact
  and so every tag it had, but Harbor reports only the first one in ``tag``: that tag's
  deletion is published, the others are repaired by reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from worker.ingest.entries import (
    entry_id,
    epoch_time,
    member_list,
    member_object,
    tag_event,
    url_host,
)
from worker.ingest.mapping import Ignored, Mapped, MappingError, body_event_id
from worker.ingest.payload import as_object, optional_str, parse_json, required_str
from worker.timefmt import parse_rfc3339

KIND = "harbor"

#: CloudEvents ``type`` → the Default format's ``type``
CLOUDEVENTS_TYPES = {
    "harbor.artifact.pushed": "PUSH_ARTIFACT",
    "harbor.artifact.deleted": "DELETE_ARTIFACT",
    "harbor.artifact.pulled": "PULL_ARTIFACT",
    "harbor.scan.completed": "SCANNING_COMPLETED",
    "harbor.scan.failed": "SCANNING_FAILED",
    "harbor.scan.stopped": "SCANNING_STOPPED",
    "harbor.quota.exceeded": "QUOTA_EXCEED",
    "harbor.quota.warned": "QUOTA_WARNING",
    "harbor.replication.status.changed": "REPLICATION",
    "harbor.tag_retention.finished": "TAG_RETENTION",
}
ACTIONS: dict[str, Literal["moved", "deleted"]] = {
    "PUSH_ARTIFACT": "moved",
    "DELETE_ARTIFACT": "deleted",
}
#: ignored event types → reason. Retention reports only one of the artifacts it deleted
#: (and no digest): the DELETE_ARTIFACT events and reconcile cover it.
IGNORED = {
    "PULL_ARTIFACT": "pull",
    "SCANNING_COMPLETED": "scan",
    "SCANNING_FAILED": "scan",
    "SCANNING_STOPPED": "scan",
    "QUOTA_EXCEED": "quota",
    "QUOTA_WARNING": "quota",
    "REPLICATION": "replication",
    "TAG_RETENTION": "retention",
}


def map_delivery(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    payload = as_object(parse_json(body), "body")
    if "specversion" in payload:
        return _map_cloudevent(payload)
    event_type = required_str(payload, "type", "body")
    if event_type not in ACTIONS:
        return [Ignored(IGNORED.get(event_type, "other_action"), event_type)]
    return _map_resources(
        ACTIONS[event_type],
        payload.get("event_data"),
        "body.event_data",
        base_id=body_event_id(body, 0),
        time=epoch_time(payload, "occur_at", "body"),
        actor=optional_str(payload, "operator", "body"),
    )


def _map_cloudevent(event: Mapping[str, Any]) -> list[Mapped]:
    ce_type = required_str(event, "type", "body")
    event_type = CLOUDEVENTS_TYPES.get(ce_type, ce_type)
    if event_type not in ACTIONS:
        return [Ignored(IGNORED.get(event_type, "other_action"), ce_type)]
    text = required_str(event, "time", "body")
    try:
        time = parse_rfc3339(text)
    except ValueError as exc:
        raise MappingError("body.time", str(exc), text) from None
    return _map_resources(
        ACTIONS[event_type],
        event.get("data"),
        "body.data",
        base_id=required_str(event, "id", "body"),
        time=time,
        actor=optional_str(event, "operator", "body"),
    )


def _map_resources(
    action: Literal["moved", "deleted"],
    raw_data: Any,
    location: str,
    *,
    base_id: str,
    time: datetime,
    actor: str | None,
) -> list[Mapped]:
    data = as_object(raw_data, location)
    repository = member_object(data, "repository", location)
    resources = member_list(data, "resources", location)
    if not resources:
        return [Ignored("empty", "no resources")]
    mapped: list[Mapped] = []
    for index, raw in enumerate(resources):
        where = f"{location}.resources[{index}]"
        resource = as_object(raw, where)
        tag = optional_str(resource, "tag", where)
        digest = optional_str(resource, "digest", where)
        if tag is None or tag == digest or tag.startswith(("sha256:", "sha512:")):
            mapped.append(Ignored("untagged" if action == "moved" else "digest_delete"))
            continue
        host = url_host(required_str(resource, "resource_url", where), f"{where}.resource_url")
        path = required_str(repository, "repo_full_name", f"{location}.repository")
        mapped.append(
            tag_event(
                action,
                kind=KIND,
                repository=f"{host}/{path}",
                tag=tag,
                digest=required_str(resource, "digest", where) if action == "moved" else None,
                event_id=entry_id(base_id, index, len(resources)),
                time=time,
                actor=actor,
                at={
                    "repository": f"{location}.repository.repo_full_name",
                    "tag": f"{where}.tag",
                    "digest": f"{where}.digest",
                },
            )
        )
    return mapped
