"""Outcomes read by a client nobody on the team wrote: the CloudEvents Python SDK's
current API (``cloudevents.core``, the v2 core API, Kafka protocol binding)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka_event


def sdk_errors(key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> list[str]:
    """Why the SDK cannot read this Kafka record as the outcome the worker wrote: it
    refuses it, or reads an attribute or the data otherwise. Empty if it reads it all."""
    try:
        event = from_kafka_event(KafkaMessage(headers=dict(headers), key=key, value=value))
    except Exception as exc:  # whatever the SDK raises is the finding
        return [f"{type(exc).__name__}: {exc}"]
    body: dict[str, Any] = json.loads(value)
    attributes = event.get_attributes()
    problems = []
    for name, written in body.items():
        got: Any = event.get_data() if name == "data" else attributes.get(name)
        # the SDK reads time as a datetime
        sent = datetime.fromisoformat(written) if name == "time" else written
        if got != sent:
            problems.append(f"{name}: the SDK reads {got!r}, the outcome has {sent!r}")
    extra = set(attributes) - set(body) - {"partitionkey"}  # the SDK's name for the key
    if extra:
        problems.append(f"the SDK reads attributes the outcome has not: {sorted(extra)}")
    return problems
