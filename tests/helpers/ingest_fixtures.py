"""Registry webhook fixtures (``tests/fixtures/ingest/<kind>/*.json``) and a compact view
of what a kind mapper made of them, for table-driven tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from worker.ingest.mapping import Handshake, Ignored, Mapped, TagChange

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"

MapDelivery = Callable[[bytes, Mapping[str, str]], list[Mapped]]


def fixture(kind: str, name: str) -> bytes:
    """The raw body of one fixture, byte for byte."""
    return (FIXTURES / kind / name).read_bytes()


def fixture_names(kind: str) -> list[str]:
    return sorted(path.name for path in (FIXTURES / kind).glob("*.json"))


def summary(mapped: list[Mapped]) -> list[tuple[Any, ...]]:
    """Each entry as a tuple: ``(action, repository, tag, digest, actor)`` for an event,
    ``("ignored", reason)``, or ``("handshake", body)``."""
    out: list[tuple[Any, ...]] = []
    for item in mapped:
        if isinstance(item, TagChange):
            out.append((item.action, item.repository, item.tag, item.digest, item.actor))
        elif isinstance(item, Ignored):
            out.append(("ignored", item.reason))
        elif isinstance(item, Handshake):
            out.append(("handshake", item.body))
    return out


def events(mapped: list[Mapped]) -> list[TagChange]:
    return [item for item in mapped if isinstance(item, TagChange)]
