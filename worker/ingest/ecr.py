"""Amazon ECR "ECR Image Action" events, as an EventBridge rule delivers them to an API
destination (one event per request, the event JSON as the body).

From the Amazon ECR user guide, "Amazon ECR events and EventBridge": ``{"version": "0",
"id", "detail-type": "ECR Image Action", "source": "aws.ecr", "account", "time",
"region", "resources": [], "detail": {"result": "SUCCESS" | "FAILURE",
"repository-name", "image-digest", "action-type": "PUSH" | "DELETE", "image-tag",
"manifest-media-type", "artifact-media-type"}}``.

- The payload has no registry host: it is ``<account>.dkr.ecr.<region>.amazonaws.com``
  (``….amazonaws.com.cn`` in the China regions).
- Identity: EventBridge's event ``id`` (kept on its retries) and ``time``.
- A push without ``image-tag`` (a push by digest, e.g. the platform manifests of an
  index) is ignored as ``untagged``; a ``DELETE`` without a tag deleted an image by digest
  (ignored as ``digest_delete``; reconcile repairs its tags); failed actions, scans, pull
  through cache and replication events are ignored.
- An array of such events (e.g. from an EventBridge Pipe with batching) is mapped entry
  by entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from worker.ingest.entries import member_object, tag_event
from worker.ingest.mapping import Ignored, Mapped, MappingError
from worker.ingest.payload import as_object, optional_str, parse_json, required_str, required_time

KIND = "ecr"
DETAIL_TYPE = "ECR Image Action"
ACTIONS: dict[str, Literal["moved", "deleted"]] = {"PUSH": "moved", "DELETE": "deleted"}
OTHER_DETAIL_TYPES = {"ECR Image Scan": "scan"}
_ACCOUNT_RE = re.compile(r"[0-9]{12}")
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")


def map_delivery(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    payload = parse_json(body)
    if isinstance(payload, list):
        return [_map_event(entry, f"body[{index}]") for index, entry in enumerate(payload)]
    return [_map_event(payload, "body")]


def _map_event(raw: Any, location: str) -> Mapped:
    event = as_object(raw, location)
    detail_type = required_str(event, "detail-type", location)
    if optional_str(event, "source", location) != "aws.ecr" or detail_type != DETAIL_TYPE:
        return Ignored(OTHER_DETAIL_TYPES.get(detail_type, "other_event"), detail_type)
    detail = member_object(event, "detail", location)
    where = f"{location}.detail"
    action_type = optional_str(detail, "action-type", where) or ""
    if action_type not in ACTIONS:
        return Ignored("other_action", action_type)
    if optional_str(detail, "result", where) != "SUCCESS":
        return Ignored("failed", optional_str(detail, "result", where) or "")
    action = ACTIONS[action_type]
    tag = optional_str(detail, "image-tag", where)
    if tag is None:
        return Ignored("untagged" if action == "moved" else "digest_delete")
    return tag_event(
        action,
        kind=KIND,
        repository=f"{_host(event, location)}/{required_str(detail, 'repository-name', where)}",
        tag=tag,
        digest=required_str(detail, "image-digest", where) if action == "moved" else None,
        event_id=required_str(event, "id", location),
        time=required_time(event, "time", location),
        actor=None,
        at={
            "repository": f"{where}.repository-name",
            "tag": f"{where}.image-tag",
            "digest": f"{where}.image-digest",
        },
    )


def _host(event: Mapping[str, Any], location: str) -> str:
    account = required_str(event, "account", location)
    region = required_str(event, "region", location)
    if not _ACCOUNT_RE.fullmatch(account):
        raise MappingError(f"{location}.account", "must be a 12-digit AWS account id", account)
    if not _REGION_RE.fullmatch(region):
        raise MappingError(f"{location}.region", "must be an AWS region such as us-west-2", region)
    # the China partition has its own domain
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{suffix}"
