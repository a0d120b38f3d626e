"""Google Artifact Registry and Container Registry notifications, as a Pub/Sub push
subscription delivers them.

From Google's "Configuring Pub/Sub notifications" (Artifact Registry and Container
Registry) and "Push subscriptions" pages: the registry publishes to the topic ``gcr``
messages whose data is ``{"action": "INSERT" | "DELETE", "digest":
"<host>/<path>@sha256:…", "tag": "<host>/<path>:<tag>"}`` (``tag`` only when a tag is
involved); hosts are ``<location>-docker.pkg.dev`` and ``gcr.io`` / ``<region>.gcr.io``.
Pub/Sub push wraps each message: ``{"message": {"data": <base64>, "messageId",
"publishTime", "attributes"}, "subscription": "projects/…/subscriptions/…"}``, or, with
payload unwrapping on, posts the data itself with ``x-goog-pubsub-message-id`` and
``x-goog-pubsub-publish-time`` headers (when "write metadata" is on).

- Identity: the Pub/Sub ``messageId`` (kept on redelivery) and ``publishTime``.
- ``INSERT`` with a tag → a move to the digest; ``INSERT`` without a tag (a push by
  digest) → ``untagged``; ``DELETE`` with a tag → a tag deletion; ``DELETE`` of a digest
  alone → ``digest_delete``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from worker.identifiers import InvalidIdentifierError, split_ocitag_id
from worker.ingest.entries import tag_event
from worker.ingest.mapping import Ignored, Mapped, MappingError
from worker.ingest.payload import as_object, optional_str, parse_json, required_str
from worker.timefmt import parse_rfc3339

KIND = "gar"
MESSAGE_ID_HEADER = "x-goog-pubsub-message-id"
PUBLISH_TIME_HEADER = "x-goog-pubsub-publish-time"


def map_delivery(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    payload = as_object(parse_json(body), "body")
    if "message" not in payload and "action" in payload:
        return [_map_unwrapped(payload, headers)]
    if "message" not in payload:
        raise MappingError("body.message", "is required: the Pub/Sub push envelope")
    message = as_object(payload["message"], "body.message")
    raw = required_str(message, "data", "body.message")
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise MappingError("body.message.data", "is not base64", raw[:64]) from None
    data = as_object(parse_json(decoded, "body.message.data"), "body.message.data")
    return [
        _map_data(
            data,
            "body.message.data",
            event_id=_either(message, "messageId", "message_id", "body.message"),
            time=_publish_time(message),
        )
    ]


def _map_unwrapped(data: Mapping[str, Any], headers: Mapping[str, str]) -> Mapped:
    message_id = headers.get(MESSAGE_ID_HEADER)
    published = headers.get(PUBLISH_TIME_HEADER)
    if not message_id or not published:
        raise MappingError(
            f"headers.{MESSAGE_ID_HEADER}",
            "an unwrapped Pub/Sub push needs 'write metadata' on (message id and publish "
            "time headers)",
        )
    try:
        time = parse_rfc3339(published)
    except ValueError as exc:
        raise MappingError(f"headers.{PUBLISH_TIME_HEADER}", str(exc), published) from None
    return _map_data(data, "body", event_id=message_id, time=time)


def _map_data(data: Mapping[str, Any], where: str, *, event_id: str, time: datetime) -> Mapped:
    action = optional_str(data, "action", where) or ""
    tag_ref = optional_str(data, "tag", where)
    if action not in ("INSERT", "DELETE"):
        return Ignored("other_action", action)
    if tag_ref is None:
        return Ignored("untagged" if action == "INSERT" else "digest_delete")
    try:
        repository, tag = split_ocitag_id(tag_ref)
    except InvalidIdentifierError as exc:
        raise MappingError(f"{where}.tag", str(exc), tag_ref) from None
    digest = None
    if action == "INSERT":
        digest_ref = required_str(data, "digest", where)
        digest = digest_ref.rpartition("@")[2]
    return tag_event(
        "moved" if action == "INSERT" else "deleted",
        kind=KIND,
        repository=repository,
        tag=tag,
        digest=digest,
        event_id=event_id,
        time=time,
        actor=None,
        at={"repository": f"{where}.tag", "tag": f"{where}.tag", "digest": f"{where}.digest"},
    )


def _either(obj: Mapping[str, Any], key: str, alias: str, location: str) -> str:
    """Pub/Sub sends both spellings (``messageId`` and ``message_id``)."""
    return optional_str(obj, key, location) or required_str(obj, alias, location)


def _publish_time(message: Mapping[str, Any]) -> datetime:
    text = _either(message, "publishTime", "publish_time", "body.message")
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise MappingError("body.message.publishTime", str(exc), text) from None
