"""Azure Container Registry: its own webhooks, and Event Grid deliveries of its events in
both the Event Grid schema and the CloudEvents 1.0 schema.

From Microsoft's "Azure Container Registry webhook reference", "Azure Container Registry
as an Event Grid source" and "Event Grid: webhook event delivery" pages:

- **Webhook**: one event per POST, ``{"id", "timestamp", "action": "push" | "delete" |
  "chart_push" | "chart_delete" | "quarantine" | "ping", "target": {"mediaType",
  "digest", "repository", "tag"}, "request": {"id", "host", "method", "useragent"}}``.
- **Event Grid schema**: a JSON array of ``{"id", "topic", "subject", "eventType":
  "Microsoft.ContainerRegistry.ImagePushed" | "…ImageDeleted" | "…ChartPushed" |
  "…ChartDeleted", "eventTime", "data": <the webhook event>}``. A new subscription is
  validated with a ``Microsoft.EventGrid.SubscriptionValidationEvent`` whose
  ``data.validationCode`` must be echoed as ``{"validationResponse": <code>}``.
- **CloudEvents schema**: a structured CloudEvent (an array of them when batching is
  on) with ``type`` as above, ``id``, ``time``, ``data``. Its validation handshake is an
  HTTP ``OPTIONS`` request (``WebHook-Request-Origin``) answered by the server.

The registry host is ``data.request.host`` (e.g. ``myregistry.azurecr.io``). Identity: the
webhook's ``id`` and ``timestamp``; the Event Grid event's ``id`` and ``eventTime`` /
``time`` (Event Grid keeps them on its retries). A push without a tag is ``untagged``. ACR
reports a manifest deletion with its digest and no tag (every tag of it goes): ignored as
``digest_delete`` and repaired by reconcile; a delete that names a tag is a tag deletion.
Helm charts of ACR's legacy chart repository are ``not_container``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from worker.ingest.entries import member_object, tag_event
from worker.ingest.mapping import Handshake, Ignored, Mapped, MappingError
from worker.ingest.payload import (
    as_object,
    optional_str,
    parse_json,
    required_str,
    required_time,
)

KIND = "acr"
VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
#: Event Grid event type → the webhook action it carries
EVENT_TYPES = {
    "Microsoft.ContainerRegistry.ImagePushed": "push",
    "Microsoft.ContainerRegistry.ImageDeleted": "delete",
    "Microsoft.ContainerRegistry.ChartPushed": "chart_push",
    "Microsoft.ContainerRegistry.ChartDeleted": "chart_delete",
}
IGNORED_ACTIONS = {
    "chart_push": "not_container",
    "chart_delete": "not_container",
    "ping": "ping",
    "quarantine": "other_action",
}


def map_delivery(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    payload = parse_json(body)
    if isinstance(payload, list):
        return [_map_grid_event(entry, f"body[{index}]") for index, entry in enumerate(payload)]
    event = as_object(payload, "body")
    if "eventType" in event or "specversion" in event:
        return [_map_grid_event(event, "body")]
    return [
        _map_registry_event(
            event,
            "body",
            action=optional_str(event, "action", "body") or "",
            event_id=required_str(event, "id", "body"),
            time_of=lambda: required_time(event, "timestamp", "body"),
        )
    ]


def _map_grid_event(raw: Any, location: str) -> Mapped:
    """One event of an Event Grid delivery, in either schema."""
    event = as_object(raw, location)
    cloudevent = "specversion" in event
    event_type = required_str(event, "type" if cloudevent else "eventType", location)
    data = member_object(event, "data", location)
    if event_type == VALIDATION:
        code = required_str(data, "validationCode", f"{location}.data")
        return Handshake({"validationResponse": code})
    if event_type not in EVENT_TYPES:
        return Ignored("other_event", event_type)
    return _map_registry_event(
        data,
        f"{location}.data",
        action=EVENT_TYPES[event_type],
        event_id=required_str(event, "id", location),
        time_of=lambda: required_time(event, "time" if cloudevent else "eventTime", location),
    )


def _map_registry_event(
    event: Mapping[str, Any],
    where: str,
    *,
    action: str,
    event_id: str,
    time_of: Callable[[], datetime],
) -> Mapped:
    """A registry event (the webhook body, or Event Grid's ``data``). ``time_of`` is only
    called for a tag change, so a broken time on an ignored entry is not an error."""
    if action not in ("push", "delete"):
        return Ignored(IGNORED_ACTIONS.get(action, "other_action"), action)
    target = member_object(event, "target", where)
    tag = optional_str(target, "tag", f"{where}.target")
    if tag is None:
        return Ignored("untagged" if action == "push" else "digest_delete")
    request = member_object(event, "request", where)
    host = required_str(request, "host", f"{where}.request")
    path = required_str(target, "repository", f"{where}.target")
    time = time_of()
    actor = optional_str(member_object(event, "actor", where), "name", f"{where}.actor")
    if "/" in host:
        raise MappingError(f"{where}.request.host", "must be a host name", host)
    return tag_event(
        "moved" if action == "push" else "deleted",
        kind=KIND,
        repository=f"{host.lower()}/{path}",
        tag=tag,
        digest=required_str(target, "digest", f"{where}.target") if action == "push" else None,
        event_id=event_id,
        time=time,
        actor=actor,
        at={
            "repository": f"{where}.target.repository",
            "tag": f"{where}.target.tag",
            "digest": f"{where}.target.digest",
        },
    )
