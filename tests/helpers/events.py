"""Tag-moved events as a producer writes them (the JSON of a structured CloudEvent)."""

from __future__ import annotations

from typing import Any

HEX = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def event(event_id: str, time: str = "2026-11-28T15:00:00Z", **data: Any) -> dict[str, Any]:
    body = {"repository": "docker.io/istio/pilot", "tag": "1.3.0", "artifact": HEX}
    body.update(data)
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "https://registry.example.com/webhook",
        "type": "ocitag.moved.v1",
        "time": time,
        "data": {k: v for k, v in body.items() if v is not None},
    }
