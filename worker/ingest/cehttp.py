"""The CloudEvents HTTP protocol binding, read side: binary mode (attributes in ``ce-*``
headers, percent-encoded; ``data`` is the body), structured mode (``application/
cloudevents+json``: the body is the event) and batched mode (``application/
cloudevents-batch+json``: a JSON array of structured events). Pure.

Written by hand (about forty lines) rather than with the CloudEvents SDK: the SDK turns
``time`` into a leniently parsed datetime and loses where a broken attribute was, while
ingest must keep the sender's exact identity and name the broken field. The tests send
with the real SDK, in both modes, to hold this to the binding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from worker.ingest.mapping import MappingError
from worker.ingest.payload import as_list, as_object, parse_json
from worker.models import STRUCTURED
from worker.timefmt import parse_rfc3339

BATCH = "application/cloudevents-batch+json"
BINARY = "headers.ce-"  # where a binary-mode event's attributes are


@dataclass(frozen=True, slots=True)
class Received:
    """One CloudEvent as received: its attributes (strings) and its data."""

    attributes: Mapping[str, Any]
    data: Any  # the parsed JSON data, or None when there is none
    location: str  # where its attributes are: "headers.ce-" or "body." / "body[3]."

    def where(self, name: str) -> str:
        """Where attribute ``name`` is: ``headers.ce-id`` or ``body.id``; in binary mode
        ``datacontenttype`` is the Content-Type header (the binding has no
        ``ce-datacontenttype``)."""
        if name == "datacontenttype" and self.location == BINARY:
            return "headers.content-type"
        return f"{self.location}{name}"

    def optional(self, name: str) -> str | None:
        value = self.attributes.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise MappingError(self.where(name), "must be a string", value)
        return value

    def required(self, name: str) -> str:
        value = self.optional(name)
        if value is None:
            raise MappingError(self.where(name), "is required (a non-empty string)")
        return value

    def time(self) -> datetime:
        text = self.required("time")
        try:
            return parse_rfc3339(text)
        except ValueError as exc:
            raise MappingError(self.where("time"), str(exc), text) from None


def media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def read_events(body: bytes, headers: Mapping[str, str]) -> list[Received]:
    """Every event of a delivery, in any content mode; MappingError when it is none."""
    kind = media_type(headers)
    if kind == BATCH:
        events = as_list(parse_json(body), "body")
        return [_structured(item, f"body[{i}]") for i, item in enumerate(events)]
    if kind == STRUCTURED or "ce-specversion" not in headers:
        if kind not in (STRUCTURED, "application/json", ""):
            raise MappingError(
                "headers.content-type",
                f"must be {STRUCTURED}, {BATCH}, or binary mode (ce-* headers)",
                kind,
            )
        return [_structured(parse_json(body), "body")]
    attributes = {
        name.removeprefix("ce-"): unquote(value)
        for name, value in headers.items()
        if name.startswith("ce-")
    }
    if kind:
        attributes["datacontenttype"] = headers["content-type"]
    data = parse_json(body, "body") if body.strip() else None
    _check_version(attributes, "headers.ce-specversion")
    return [Received(attributes, data, BINARY)]


def _structured(raw: Any, location: str) -> Received:
    event = dict(as_object(raw, location))
    data = event.pop("data", None)
    if "data_base64" in event:
        raise MappingError(f"{location}.data_base64", "binary data is not accepted: send JSON data")
    _check_version(event, f"{location}.specversion")
    return Received(event, data, f"{location}.")


def _check_version(attributes: Mapping[str, Any], location: str) -> None:
    if attributes.get("specversion") != "1.0":
        raise MappingError(location, "must be '1.0'", attributes.get("specversion"))
