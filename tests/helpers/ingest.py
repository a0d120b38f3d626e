"""Ingest fixtures: ``tests/fixtures/ingest/<kind>/<name>.json`` holds either the body
itself, or ``{"headers": {...}, "body": ...}`` when the headers matter (CloudEvents
binary mode). Bodies are re-serialised compactly, as senders post them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"


def fixture_names(kind: str) -> list[str]:
    return sorted(p.stem for p in (FIXTURES / kind).glob("*.json"))


def load_delivery(kind: str, name: str) -> tuple[bytes, dict[str, str]]:
    """(body, headers with lower-case names) of a fixture."""
    raw: Any = json.loads((FIXTURES / kind / f"{name}.json").read_text(encoding="utf-8"))
    if isinstance(raw, dict) and set(raw) == {"headers", "body"}:
        headers = {k.lower(): v for k, v in raw["headers"].items()}
        return json.dumps(raw["body"]).encode(), headers
    return json.dumps(raw).encode(), {"content-type": "application/json"}
