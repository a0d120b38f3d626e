"""Docker Hub repository webhooks.

From Docker's "Webhooks" page (docs.docker.com/docker-hub/repos/manage/webhooks): one
POST per push, ``{"callback_url", "push_data": {"pushed_at": <unix s>, "pusher",
"tag"}, "repository": {"repo_name": "<namespace>/<name>", "namespace", "name", …}}``.
Docker Hub sends pushes only (no deletions), and no digest: the event carries
``digest=None`` and the server resolves it with ``HEAD /v2/<name>/manifests/<tag>``.
There is no event id either: the id is derived from the body; the time is ``pushed_at``.
The registry host is always ``docker.io``.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.ingest.entries import epoch_time, member_object, tag_event
from worker.ingest.mapping import Ignored, Mapped, MappingError, body_event_id
from worker.ingest.payload import as_object, optional_str, parse_json, required_str

KIND = "dockerhub"
HOST = "docker.io"


def map_delivery(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    payload = as_object(parse_json(body), "body")
    if "push_data" not in payload:
        raise MappingError("body.push_data", "is required: Docker Hub's push webhook payload")
    push = as_object(payload["push_data"], "body.push_data")
    tag = optional_str(push, "tag", "body.push_data")
    if tag is None:
        return [Ignored("untagged")]
    repository = member_object(payload, "repository", "body")
    name = required_str(repository, "repo_name", "body.repository")
    return [
        tag_event(
            "moved",
            kind=KIND,
            repository=f"{HOST}/{name}",
            tag=tag,
            digest=None,
            event_id=body_event_id(body, 0),
            time=epoch_time(push, "pushed_at", "body.push_data"),
            actor=optional_str(push, "pusher", "body.push_data"),
            at={
                "repository": "body.repository.repo_name",
                "tag": "body.push_data.tag",
                "digest": "body.push_data",
            },
        )
    ]
