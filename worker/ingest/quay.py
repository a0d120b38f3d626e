"""Quay (quay.io and Red Hat Quay) ``repo_push`` notifications with the webhook method.

From Quay's notification documentation (docs.quay.io/guides/notifications.html, "Push to
Repository"): ``{"name", "repository": "<namespace>/<name>", "namespace", "docker_url":
"<host>/<namespace>/<name>", "homepage", "updated_tags": ["latest", …]}``. One
notification lists every tag the push updated: each becomes a move. Quay sends no digest
(resolved by the server with ``HEAD /v2/<name>/manifests/<tag>``) and no tag deletions
(reconcile repairs those).

Identity: the payload carries neither an id nor a time. The id of tag ``i`` is derived
from the body and ``i`` (Quay's notification worker retries the same body); the time is
the arrival time the server stamps on the delivery (``x-ocitag-received-at``), so a
retry of a delivery that was already published carries a later time and the worker
answers it 409 (same id, other content): one effect either way.

Other notifications sent to the same endpoint (builds, vulnerabilities, mirroring) are
ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.ingest.entries import member_list, received_time, tag_event
from worker.ingest.mapping import Ignored, Mapped, MappingError, body_event_id
from worker.ingest.payload import as_object, parse_json, required_str

KIND = "quay"


def map_delivery(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    payload = as_object(parse_json(body), "body")
    if "updated_tags" not in payload:
        if "vulnerability" in payload:
            return [Ignored("scan")]
        return [Ignored("build" if "build_id" in payload else "other_event")]
    tags = member_list(payload, "updated_tags", "body")
    if not tags:
        return [Ignored("empty", "no updated_tags")]
    url = required_str(payload, "docker_url", "body")
    time = received_time(headers)
    mapped: list[Mapped] = []
    for index, tag in enumerate(tags):
        where = f"body.updated_tags[{index}]"
        if not isinstance(tag, str):
            raise MappingError(where, "must be a tag name (a string)", tag)
        mapped.append(
            tag_event(
                "moved",
                kind=KIND,
                repository=url.split("://", 1)[-1],
                tag=tag,
                digest=None,
                event_id=body_event_id(body, index),
                time=time,
                actor=None,
                at={"repository": "body.docker_url", "tag": where, "digest": where},
            )
        )
    return mapped
