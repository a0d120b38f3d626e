"""JFrog Artifactory webhooks of the ``docker`` domain.

From JFrog's "Webhooks" and "Domain: Docker" pages (and Telegraf's Artifactory webhook
input, which parses the same envelope): ``{"domain": "docker", "event_type": "pushed" |
"deleted" | "promoted", "subscription_key", "jpd_origin": "https://<host>[/artifactory]",
"data": {"repo_key", "event_type", "path": "<image>/<tag>/manifest.json", "name":
"manifest.json" | "list.manifest.json", "sha256": "<hex>", "size", "image_name", "tag",
"platforms": […]}}``.

- The repository follows Artifactory's "repository path" method:
  ``<host>/<repo_key>/<image_name>``, the host from ``jpd_origin`` (or, where that is an
  internal name, from an ``X-Ocitag-Registry`` custom header on the webhook).
- ``sha256`` is the checksum of the stored manifest file, i.e. the manifest (or index,
  for ``list.manifest.json``) digest. A manifest pushed by digest is stored under a
  ``sha256__<hex>`` folder and reported with that as its ``tag``: ignored as ``untagged``.
- Identity: the payload carries neither an id nor a time. The id is derived from the
  body; the time is the arrival time the server stamps (``x-ocitag-received-at``).
- ``promoted`` (a copy into another repository, which the payload does not name) and
  other domains are ignored; reconcile repairs what they change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from worker.ingest.entries import received_time, tag_event, url_host
from worker.ingest.mapping import REGISTRY_HEADER, Ignored, Mapped, MappingError, body_event_id
from worker.ingest.payload import as_object, optional_str, parse_json, required_str

KIND = "artifactory"
ACTIONS: dict[str, Literal["moved", "deleted"]] = {"pushed": "moved", "deleted": "deleted"}
DIGEST_FOLDER_PREFIXES = ("sha256__", "sha256:", "sha512__", "sha512:")


def map_delivery(body: bytes, headers: Mapping[str, str]) -> list[Mapped]:
    payload = as_object(parse_json(body), "body")
    domain = required_str(payload, "domain", "body")
    if domain != "docker":
        return [Ignored("other_event", domain)]
    event_type = required_str(payload, "event_type", "body")
    if event_type not in ACTIONS:
        return [Ignored("other_action", event_type)]
    action = ACTIONS[event_type]
    if "data" not in payload:
        raise MappingError("body.data", "is required")
    data = as_object(payload["data"], "body.data")
    tag = optional_str(data, "tag", "body.data")
    if tag is None or tag.startswith(DIGEST_FOLDER_PREFIXES):
        return [Ignored("untagged" if action == "moved" else "digest_delete")]
    host = headers.get(REGISTRY_HEADER) or url_host(
        required_str(payload, "jpd_origin", "body"), "body.jpd_origin"
    )
    repo_key = required_str(data, "repo_key", "body.data")
    image = required_str(data, "image_name", "body.data")
    digest = required_str(data, "sha256", "body.data") if action == "moved" else None
    return [
        tag_event(
            action,
            kind=KIND,
            repository=f"{host}/{repo_key}/{image}",
            tag=tag,
            digest=digest,
            event_id=body_event_id(body, 0),
            time=received_time(headers),
            actor=None,
            at={
                "repository": "body.data.image_name",
                "tag": "body.data.tag",
                "digest": "body.data.sha256",
            },
        )
    ]
