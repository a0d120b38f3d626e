"""The events of a reconcile run: source, ids and times. Pure.

- ``source`` = ``urn:ocitag:reconcile:<host>:<run id>``: which registry and which run
  published the event (the record's ``last_modified_by`` when no actor is given).
- ``id`` = a UUID (v5) of the run id, the OCITag ID and the kind: a run that is retried
  after a failed publish sends the same ids, so the worker's idempotency record makes
  the retry harmless; another run has other ids.
- ``time`` = when the registry was observed (diff.py says why that instant).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any

from worker.encode import build_event
from worker.reconcile.diff import Difference
from worker.timefmt import format_rfc3339

_NAMESPACE = uuid.UUID("6f1d8f52-4a1e-5c57-9d0e-7c9f3a1b2e40")


def new_run_id(started: datetime) -> str:
    """Sortable and unique: ``20261202T031500Z-1a2b3c``."""
    return f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run_source(host: str, run_id: str) -> str:
    return f"urn:ocitag:reconcile:{host}:{run_id}"


def event_id(run_id: str, difference: Difference) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{run_id}\n{difference.ocitag_id}\n{difference.kind}"))


def to_event(difference: Difference, host: str, run_id: str) -> dict[str, Any]:
    """The structured CloudEvent that repairs ``difference``."""
    return build_event(
        difference.ocitag_id,
        difference.artifact,
        source=run_source(host, run_id),
        event_id=event_id(run_id, difference),
        time=format_rfc3339(difference.observed_at),
    )
